"""ISS on users' modules: ``sparsernn.compact`` over {LSTM, GRU, RNN} x {1, 2 layers} x batch_first x bias
(outputs equal to the zeroed model's to 1e-6, parameter count exact), ``LayerwiseRNN`` when a stack's
layers end at different widths, bidirectional refused in one line, and ``sparsernn.group_lasso`` driving
components to exact zero."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import sparsernn
from sparsernn.errors import DiscoveryError
from sparsernn.sparsity.user_iss import discovered_slices
from sparsernn.sparsity.iss import _unit_view

KINDS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class UserModel(nn.Module):
    """A user's model as they write it: ``emb``, ``rnn``, ``fc``."""

    def __init__(self, kind: str, layers: int, batch_first: bool, bias: bool, bidirectional: bool = False) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.emb = nn.Embedding(11, 6)
        self.rnn = KINDS[kind](6, 8, layers, batch_first=batch_first, bias=bias, bidirectional=bidirectional)
        self.fc = nn.Linear(8 * (2 if bidirectional else 1), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(self.emb(x if self.batch_first else x.t()))[0])


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _zero(model: nn.Module, example: torch.Tensor, units: dict[int, list[int]]) -> None:
    """Zero whole ISS components (layer -> units)."""
    stack = sparsernn.discover(model, example)
    for s in discovered_slices(model, stack):
        for k in units.get(s.layer, []):
            _unit_view(model.get_parameter(s.param).data, s)[:, :, k, :] = 0


@pytest.mark.parametrize("kind,layers,batch_first,bias",
                         list(itertools.product(KINDS, (1, 2), (True, False), (True, False))))
def test_compact_matrix(kind: str, layers: int, batch_first: bool, bias: bool) -> None:
    torch.manual_seed(0)
    model = UserModel(kind, layers, batch_first, bias).eval()
    x = torch.randint(0, 11, (3, 7))
    _zero(model, x, {0: [1, 4], 1: [0, 2, 5]} if layers == 2 else {0: [1, 4, 6]})
    small = sparsernn.compact(model, x)
    widths = [8 - 2, 8 - 3] if layers == 2 else [8 - 3]
    expected = _params(model) - sum(_removed(kind, layers, bias, widths))
    assert torch.allclose(small(x), model(x), atol=1e-6)
    assert _params(small) == expected
    if layers == 2:
        assert isinstance(small.rnn, sparsernn.LayerwiseRNN)


def _removed(kind: str, layers: int, bias: bool, widths: list[int]) -> list[int]:
    """Parameters the narrower model no longer holds, counted from the widths."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    full, inputs, count = 8, 6, []
    kept_before, full_before = inputs, inputs
    for width in widths:
        per_unit_full = gates * full * (full_before + full + (2 if bias else 0))
        per_unit_kept = gates * width * (kept_before + width + (2 if bias else 0))
        count.append(per_unit_full - per_unit_kept)
        kept_before, full_before = width, full
    count.append(5 * (full - widths[-1]))
    return count


def test_equal_widths_stay_one_module() -> None:
    torch.manual_seed(0)
    model = UserModel("lstm", 2, True, True).eval()
    x = torch.randint(0, 11, (2, 5))
    _zero(model, x, {0: [3], 1: [6]})
    small = sparsernn.compact(model, x)
    assert isinstance(small.rnn, nn.LSTM) and small.rnn.hidden_size == 7 and small.rnn.num_layers == 2
    assert torch.allclose(small(x), model(x), atol=1e-6)


def test_bidirectional_refused_in_one_line() -> None:
    model = UserModel("gru", 1, True, True, bidirectional=True)
    x = torch.randint(0, 11, (2, 5))
    with pytest.raises(DiscoveryError, match="bidirectional") as info:
        sparsernn.compact(model, x)
    assert "\n" not in str(info.value)


def test_group_lasso_reaches_exact_zeros() -> None:
    """The proximal step zeroes whole components exactly; training stops at the first one gone (a larger
    lambda, or longer, removes whole layers, which compaction then refuses)."""
    torch.manual_seed(0)
    model = UserModel("gru", 2, True, True)
    x = torch.randint(0, 11, (16, 6))
    y = x % 5
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    lasso = sparsernn.group_lasso(model, optimizer, x, lam=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x).reshape(-1, 5), y.reshape(-1)).backward()
        optimizer.step()
        lasso.step()
        if any(k < 8 for k in lasso.kept()):
            break
    kept = lasso.kept()
    assert any(k < 8 for k in kept) and all(k > 0 for k in kept), kept
    small = sparsernn.compact(model.eval(), x)
    assert torch.allclose(small(x), model(x), atol=1e-6)
    assert _params(small) < _params(model)
