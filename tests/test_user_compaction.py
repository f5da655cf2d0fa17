"""ISS on users' modules: ``sparsernn.compact`` over {LSTM, GRU, RNN} x {1, 2 layers} x batch_first x bias
(outputs equal to the zeroed model's to 1e-6, parameter count exact), ``LayerwiseRNN`` when a stack's
layers end at different widths, bidirectional layers (unit k of both directions), and ``sparsernn.group_lasso`` driving
components to exact zero."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import sparsernn
from sparsernn.errors import DiscoveryError
from sparsernn.sparsity.iss import _unit_view
from sparsernn.sparsity.user_iss import discovered_slices

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


@pytest.mark.parametrize("kind,layers,batch_first,bias,bidirectional",
                         list(itertools.product(KINDS, (1, 2), (True, False), (True, False), (False, True))))
def test_compact_matrix(kind: str, layers: int, batch_first: bool, bias: bool, bidirectional: bool) -> None:
    torch.manual_seed(0)
    model = UserModel(kind, layers, batch_first, bias, bidirectional).eval()
    x = torch.randint(0, 11, (3, 7))
    _zero(model, x, {0: [1, 4], 1: [0, 2, 5]} if layers == 2 else {0: [1, 4, 6]})
    small = sparsernn.compact(model, x)
    widths = [8 - 2, 8 - 3] if layers == 2 else [8 - 3]
    expected = _params(model) - sum(_removed(kind, bias, widths, 2 if bidirectional else 1))
    assert torch.allclose(small(x), model(x), atol=1e-6)
    assert _params(small) == expected
    if layers == 2:
        assert isinstance(small.rnn, sparsernn.LayerwiseRNN)
    else:
        assert isinstance(small.rnn, KINDS[kind]) and small.rnn.bidirectional == bidirectional
        assert small.rnn.hidden_size == widths[0]


def _removed(kind: str, bias: bool, widths: list[int], directions: int = 1) -> list[int]:
    """Parameters the narrower model no longer holds, counted from the widths (per direction: gate rows
    times the layer's inputs, recurrent columns and two biases; a layer above reads both directions)."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    full, inputs, count = 8, 6, []
    kept_before, full_before = inputs, inputs
    for width in widths:
        per_unit_full = directions * gates * full * (full_before + full + (2 if bias else 0))
        per_unit_kept = directions * gates * width * (kept_before + width + (2 if bias else 0))
        count.append(per_unit_full - per_unit_kept)
        kept_before, full_before = directions * width, directions * full
    count.append(5 * directions * (full - widths[-1]))
    return count


def test_equal_widths_stay_one_module() -> None:
    torch.manual_seed(0)
    model = UserModel("lstm", 2, True, True).eval()
    x = torch.randint(0, 11, (2, 5))
    _zero(model, x, {0: [3], 1: [6]})
    small = sparsernn.compact(model, x)
    assert isinstance(small.rnn, nn.LSTM) and small.rnn.hidden_size == 7 and small.rnn.num_layers == 2
    assert torch.allclose(small(x), model(x), atol=1e-6)


def test_group_lasso_reaches_exact_zeros() -> None:
    """The proximal step zeroes whole components exactly; training stops at the first one gone (a larger
    lambda, or longer, removes whole layers, which compaction then refuses)."""
    torch.manual_seed(0)
    model = UserModel("gru", 2, True, True)
    x = torch.randint(0, 11, (16, 6))
    y = x % 5
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    lasso = sparsernn.group_lasso(model, optimizer, x, lasso_lambda=0.05)
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


class TiedLM(nn.Module):
    """An LM whose embedding is its decoder's weight (``emb.weight is fc.weight``); ``project`` puts a
    Linear between the embedding and the first layer (then the tie cannot be narrowed: refused)."""

    def __init__(self, kind: str, layers: int, project: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.proj = nn.Linear(8, 8) if project else None
        self.rnn = KINDS[kind](8, 8, layers)
        self.fc = nn.Linear(8, 11)
        self.fc.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = nn.functional.dropout(self.emb(x), 0.2, self.training)
        return self.fc(self.rnn(e if self.proj is None else self.proj(e))[0])


def _tied_count(kind: str, widths: list[int]) -> int:
    """Parameters of a tied LM at these widths: the embedding (= decoder) is as wide as the last layer,
    which the first layer reads."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    inputs = [widths[-1], *widths[:-1]]
    return sum(gates * w * (i + w + 2) for w, i in zip(widths, inputs)) + 11 * widths[-1] + 11


@pytest.mark.parametrize("kind,layers", list(itertools.product(KINDS, (1, 2))))
def test_a_tied_embedding_is_narrowed_with_its_head_and_stays_tied(kind: str, layers: int) -> None:
    torch.manual_seed(0)
    model = TiedLM(kind, layers).eval()
    x = torch.randint(0, 11, (7, 3))
    stack = sparsernn.discover(model, x)
    assert stack[-1].receivers == ("fc", "emb")
    assert _params(model) == _tied_count(kind, [8] * layers)
    units = {0: [1, 4], 1: [0, 2, 5]} if layers == 2 else {0: [1, 4, 6]}
    _zero(model, x, units)
    last = units[layers - 1]
    assert not model.emb.weight[:, last].any() and not model.rnn.weight_ih_l0[:, last].any()
    small = sparsernn.compact(model, x)
    widths = [8 - len(units[n]) for n in range(layers)]
    assert small.emb.weight is small.fc.weight and small.emb.weight.shape == (11, widths[-1])
    assert torch.allclose(small(x), model(x), atol=1e-6)
    assert _params(small) == _tied_count(kind, widths)


def test_group_lasso_on_a_tied_model_takes_the_first_layers_input_columns() -> None:
    torch.manual_seed(0)
    model = TiedLM("lstm", 2)
    x = torch.randint(0, 11, (7, 3))
    lasso = sparsernn.group_lasso(model, torch.optim.SGD(model.parameters(), lr=1.0), x, lasso_lambda=10.0)
    columns = [s for s in lasso.slices if s.layer == 1 and s.dim == 1]
    assert sorted(s.param for s in columns) == ["fc.weight", "rnn.weight_hh_l1", "rnn.weight_ih_l0"]


def test_an_unproven_tie_is_refused_in_one_line() -> None:
    model = TiedLM("gru", 1, project=True)
    x = torch.randint(0, 11, (7, 3))
    assert sparsernn.discover(model, x)[-1].receivers == ("fc",)  # the embedding feeds proj, not the layer
    for call in (lambda: sparsernn.compact(model, x), lambda: sparsernn.group_lasso(
            model, torch.optim.SGD(model.parameters(), lr=1.0), x)):
        with pytest.raises(DiscoveryError, match=r"^emb: tied to fc's weight") as info:
            call()
        assert "\n" not in str(info.value)


def test_each_layer_of_a_deep_module_has_its_own_components() -> None:
    """The silent case of issue 27: layer 1 of a 2-layer nn.LSTM is its own layer (its rows are its own
    components; its input columns belong to layer 0's), not folded into layer 0."""
    model = UserModel("lstm", 2, False, True)
    slices = discovered_slices(model, sparsernn.discover(model, torch.randint(0, 11, (3, 7))))
    by_layer = {n: sorted((s.param, s.dim) for s in slices if s.layer == n) for n in (0, 1)}
    rows = lambda n: [(f"rnn.{k}_l{n}", 0) for k in ("bias_hh", "bias_ih", "weight_hh", "weight_ih")]
    assert by_layer[0] == sorted([*rows(0), ("rnn.weight_hh_l0", 1), ("rnn.weight_ih_l1", 1)])
    assert by_layer[1] == sorted([*rows(1), ("rnn.weight_hh_l1", 1), ("fc.weight", 1)])
