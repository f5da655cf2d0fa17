"""Size targets on the user ISS path: ``sparsernn.group_lasso(model, ..., target_units=...)`` or
``target_multiply_adds=...`` steers lambda with the toolkit's controller (``sparsity.lasso``): the kept
count follows the cubic schedule step by step, meets the target exactly at ``target_epoch`` with nothing
forced, and compaction then gives exactly the target widths with equal outputs. Bad settings: one line."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import sparsernn
from sparsernn.errors import ConfigError
from sparsernn.sparsity.lasso import scheduled_units
from sparsernn.sparsity.user_iss import stack_multiply_adds

KINDS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class UserModel(nn.Module):
    def __init__(self, kind: str, bidirectional: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.rnn = KINDS[kind](6, 8, 2, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(8 * (2 if bidirectional else 1), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(self.emb(x))[0])


def _train(model: nn.Module, lasso, steps: int, x: torch.Tensor, optimizer) -> list[list[int]]:
    kept = []
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x).reshape(-1, 5), (x % 5).reshape(-1)).backward()
        optimizer.step()
        lasso.step()
        kept.append(lasso.kept())
    return kept


@pytest.mark.parametrize("kind,bidirectional", [("lstm", False), ("gru", True), ("rnn", False)])
def test_unit_targets_follow_the_schedule_and_compact_to_them(kind: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    model = UserModel(kind, bidirectional)
    x = torch.randint(0, 11, (16, 6))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    # 10 epochs of 2 steps: the target epoch defaults to 3/4 of the run, epoch 7 (step 14)
    lasso = sparsernn.group_lasso(model, optimizer, x, target_units=[5, 3], total_steps=20, steps_per_epoch=2)
    kept = _train(model, lasso, 20, x, optimizer)
    expected = [[math.ceil(scheduled_units(8, target, step, 14) - 1e-9) for target in (5, 3)] for step in range(1, 21)]
    assert kept == expected and kept[13] == [5, 3] and kept[-1] == [5, 3]
    assert lasso.lasso.forced == 0 and lasso.lambdas == [0.0, 0.0]  # on target: nothing shrinks any more
    for name, param in model.named_parameters():  # removed components: zero in the momentum too
        momentum = optimizer.state[param]["momentum_buffer"]
        assert not momentum[param == 0].any(), name
    small = sparsernn.compact(model.eval(), x)
    assert [layer.hidden_size for layer in sparsernn.discover(small, x)] == [5, 3]
    assert torch.allclose(small(x), model(x), atol=1e-6)


def test_one_unit_target_for_all_layers_and_a_state_dict_that_resumes() -> None:
    torch.manual_seed(1)
    model = UserModel("lstm")
    x = torch.randint(0, 11, (16, 6))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    lasso = sparsernn.group_lasso(model, optimizer, x, target_units=4, target_epoch=6, total_steps=8)
    assert lasso.targets == [4, 4]
    _train(model, lasso, 3, x, optimizer)
    saved = lasso.state_dict()
    again = sparsernn.group_lasso(model, optimizer, x, target_units=4, target_epoch=6, total_steps=8)
    again.load_state_dict(saved)
    assert again.lasso.step == 3 and [int(r.sum()) for r in again.lasso.removed] == [8 - k for k in lasso.kept()]
    assert _train(model, again, 5, x, optimizer)[-1] == [4, 4]


def test_a_multiply_add_target() -> None:
    torch.manual_seed(0)
    model = UserModel("lstm")
    x = torch.randint(0, 11, (16, 6))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    lasso = sparsernn.group_lasso(model, optimizer, x, target_multiply_adds=0.5, total_steps=12)
    stack = sparsernn.discover(model, x)
    # LSTM: 4 gates x h x (inputs + h) per layer; layer 1 reads layer 0
    assert stack_multiply_adds(model, stack, [8, 8]) == 4 * 8 * (6 + 8) + 4 * 8 * (8 + 8)
    assert stack_multiply_adds(model, stack, [5, 5]) == 4 * 5 * (6 + 5) + 4 * 5 * (5 + 5)
    assert lasso.targets == [5, 5]  # 420 / 960 of the multiply-adds: the nearest common width to a half
    assert _train(model, lasso, 12, x, optimizer)[-1] == [5, 5]


@pytest.mark.parametrize("settings, message", [
    ({"target_units": [4], "target_multiply_adds": 0.5, "total_steps": 8}, "set one target, not both"),
    ({"target_units": [4], "lasso_lambda": 0.1, "total_steps": 8}, "lasso_lambda: a target sets lambda"),
    ({"target_units": [4]}, "a size target needs total_steps"),
    ({"target_units": [4], "total_steps": 8, "target_epoch": 9}, "target_epoch 9 is not in 1..8"),
    ({"target_epoch": 2}, "target_epoch: only used with"),
    ({"lasso_update": "subgradient"}, "lasso_update 'subgradient'"),
    ({"target_units": [4, 4, 4], "total_steps": 8}, "3 unit targets for 2 recurrent layers"),
    ({"target_units": [9], "total_steps": 8}, "a unit target must be in 1..the layer's width"),
    ({"target_multiply_adds": 1.5, "total_steps": 8}, "a multiply-add ratio must be in (0, 1]"),
    ({"lasso_lambda": -1.0}, "lasso_lambda must be >= 0")])
def test_bad_settings_are_refused_in_one_line(settings: dict, message: str) -> None:
    model = UserModel("gru")
    x = torch.randint(0, 11, (2, 5))
    with pytest.raises(ConfigError) as info:
        sparsernn.group_lasso(model, torch.optim.SGD(model.parameters(), lr=0.1), x, **settings)
    assert str(info.value).startswith("group_lasso: ") and message in str(info.value) and "\n" not in str(info.value)
