"""A user's own model (``emb`` -> ``rnn`` -> ``fc``, standard PyTorch modules) through discovery,
``sparsernn.sparsify`` and ``sparsernn.lyapunov_spectrum``: the matrix of issue 27 over the cell, the
depth, ``batch_first``, ``bias`` and ``bidirectional``, and the cases that are refused in one line."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

import sparsernn
from sparsernn.config import ModelConfig
from sparsernn.errors import ConfigError, DiscoveryError
from sparsernn.models import RNNLanguageModel
from sparsernn.sparsity import modes
from sparsernn.sparsity.masks import prunable_parameters

VOCAB, EMBED, HIDDEN, BATCH, STEPS = 13, 6, 5, 3, 6
KINDS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN}
MATRIX = [(cell, layers, batch_first, bias, bidirectional)
          for cell, layers, batch_first, bias, bidirectional
          in itertools.product(KINDS, (1, 2), (True, False), (True, False), (False, True))]


def _id(case: tuple) -> str:
    cell, layers, batch_first, bias, bidirectional = case
    return f"{cell}-{layers}l-{'bf' if batch_first else 'tf'}-{'bias' if bias else 'nobias'}" + ("-bi" if bidirectional
                                                                                                else "")


class UserModel(nn.Module):
    """What a user writes: an embedding, one multi-layer PyTorch RNN, a linear head."""

    def __init__(self, cell: str, layers: int, batch_first: bool, bias: bool, bidirectional: bool) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMBED)
        self.rnn = KINDS[cell](EMBED, HIDDEN, num_layers=layers, batch_first=batch_first, bias=bias,
                               bidirectional=bidirectional)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(HIDDEN * (2 if bidirectional else 1), VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.drop(self.emb(tokens)))
        return self.fc(self.drop(out))


class Split(nn.Module):
    """The same weights as ``UserModel``'s, one single-layer module per layer."""

    def __init__(self, model: UserModel) -> None:
        super().__init__()
        rnn = model.rnn
        self.emb, self.fc = model.emb, model.fc
        width = HIDDEN * (2 if rnn.bidirectional else 1)
        self.layers = nn.ModuleList(
            type(rnn)(EMBED if n == 0 else width, HIDDEN, batch_first=rnn.batch_first, bias=rnn.bias,
                      bidirectional=rnn.bidirectional, **({} if isinstance(rnn, (nn.LSTM, nn.GRU)) else
                                                           {"nonlinearity": rnn.nonlinearity}))
            for n in range(rnn.num_layers))
        for n, layer in enumerate(self.layers):
            layer.load_state_dict({name.replace(f"_l{n}", "_l0"): value for name, value in rnn.state_dict().items()
                                   if f"_l{n}" in name})

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)
        for layer in self.layers:
            x, _ = layer(x)
        return self.fc(x)


def make(case: tuple, seed: int = 0) -> tuple[UserModel, torch.Tensor]:
    torch.manual_seed(seed)
    model = UserModel(*case)
    tokens = torch.randint(0, VOCAB, (BATCH, STEPS) if model.rnn.batch_first else (STEPS, BATCH))
    return model, tokens


def one_line_refusal(error: pytest.ExceptionInfo, names: str) -> None:
    assert "\n" not in str(error.value) and str(error.value).startswith(names), str(error.value)


# ---- discovery ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MATRIX, ids=_id)
def test_discovery_describes_every_layer_in_order(case):
    cell, layers, batch_first, bias, bidirectional = case
    model, tokens = make(case)
    stack = sparsernn.discover(model, tokens)
    assert [layer.name for layer in stack] == [f"rnn[{n}]" for n in range(layers)]
    directions = 2 if bidirectional else 1
    for n, layer in enumerate(stack):
        assert (layer.cell, layer.hidden_size, layer.bidirectional, layer.batch_first, layer.index) == (
            cell, HIDDEN, bidirectional, batch_first, n)
        assert layer.input_size == (EMBED if n == 0 else directions * HIDDEN)
        assert layer.receivers == ((f"rnn[{n + 1}]",) if n + 1 < layers else ("fc",))
    assert model.training  # discovery ran in eval mode and gave the flags back


class Stacked(nn.Module):
    """Two separate modules, defined in the reverse of the order they run; a tied head."""

    def __init__(self) -> None:
        super().__init__()
        self.top = nn.GRU(HIDDEN, HIDDEN)
        self.bottom = nn.LSTM(HIDDEN, HIDDEN, num_layers=2)
        self.emb = nn.Embedding(VOCAB, HIDDEN)
        self.fc = nn.Linear(HIDDEN, VOCAB)
        self.fc.weight = self.emb.weight

    def forward(self, tokens, state=None):
        x, state = self.bottom(self.emb(tokens), state)
        x, _ = self.top(nn.functional.dropout(x, 0.3, self.training)[:, :])
        return self.fc(x).view(-1, VOCAB), state  # the carried state is handed back, not read


def test_discovery_follows_the_data_across_modules_with_a_tied_head():
    stack = sparsernn.discover(Stacked(), torch.randint(0, VOCAB, (STEPS, BATCH)))
    assert [(layer.name, layer.cell) for layer in stack] == [("bottom[0]", "lstm"), ("bottom[1]", "lstm"),
                                                              ("top[0]", "gru")]
    assert [layer.receivers for layer in stack] == [("bottom[1]",), ("top[0]",), ("fc", "emb")]


class Classifier(nn.Module):
    """A sentence classifier reading each layer's last state."""

    def __init__(self, bidirectional: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMBED)
        self.rnn = nn.GRU(EMBED, HIDDEN, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(HIDDEN * (2 if bidirectional else 1), 3)
        self.bidirectional = bidirectional

    def forward(self, tokens):
        _, h = self.rnn(self.emb(tokens))
        last = torch.cat([h[-2], h[-1]], 1) if self.bidirectional else h[-1]
        return self.fc(last)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_classifier_reading_the_final_state(bidirectional):
    stack = sparsernn.discover(Classifier(bidirectional), torch.randint(0, VOCAB, (BATCH, STEPS)))
    assert [layer.receivers for layer in stack] == [("rnn[1]",), ("fc",)]


class Refused(nn.Module):
    """One model per way of reading a recurrent layer's units that cannot be proven."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.emb = nn.Embedding(VOCAB, HIDDEN)
        self.rnn = nn.LSTM(HIDDEN, HIDDEN, proj_size=2 if how == "proj" else 0)
        self.dec = nn.LSTM(HIDDEN, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)
        self.cell = nn.LSTMCell(HIDDEN, HIDDEN) if how == "cell" else None
        self.fc = nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens):
        x = self.emb(tokens)
        if self.how == "twice":
            x, _ = self.rnn(self.rnn(x)[0])
            return self.fc(self.dec(x)[0])
        out, (h, c) = self.rnn(x)
        if self.how == "residual":
            return self.fc(self.dec(out + x)[0])
        if self.how == "norm":
            return self.fc(self.norm(self.dec(out)[0]))
        if self.how == "cell_state":
            return self.fc(self.dec(out)[0]) + self.fc(c[-1])
        if self.how == "seq2seq":
            return self.fc(self.dec(x, (h, c))[0])
        if self.how == "unused":
            return self.fc(self.dec(x)[0])
        return self.fc(self.dec(out)[0]), self.fc(torch.relu(out))  # "second_head"


@pytest.mark.parametrize("how, names", [
    ("residual", "rnn:"), ("norm", "dec:"), ("cell_state", "rnn:"), ("seq2seq", "rnn:"), ("unused", "rnn[0]:"),
    ("second_head", "rnn:"), ("twice", "rnn:"), ("proj", "rnn:"), ("cell", "cell:")])
def test_what_cannot_be_proven_is_refused_in_one_line(how, names):
    with pytest.raises(DiscoveryError) as error:
        sparsernn.discover(Refused(how), torch.randint(0, VOCAB, (STEPS, BATCH)))
    one_line_refusal(error, names)


# ---- sparsify -------------------------------------------------------------------------------------


def train(model: nn.Module, tokens: torch.Tensor, optimizer, sparse, steps: int) -> None:
    for _ in range(steps):
        loss = model(tokens).logsumexp(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sparse.step()


def assert_masked(model: nn.Module, optimizer, sparse) -> None:
    """Zeros stay zero: in the weights and in every optimizer state tensor shaped like a weight."""
    for name, mask in sparse.masks.items():
        param = model.get_parameter(name)
        assert not param[~mask].any(), name
        for value in optimizer.state[param].values():
            if value.shape == param.shape:
                assert not value[~mask].any(), name


@pytest.mark.parametrize("case", MATRIX, ids=_id)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sparsify_keeps_the_exact_density_and_the_zeros(case, optimizer):
    model, tokens = make(case)
    opt = (torch.optim.SGD(model.parameters(), 0.5, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), 0.01))
    sparse = sparsernn.sparsify(model, opt, "rigl", density=0.4, total_steps=8, init="uniform", update_every=2)
    rnn = model.rnn
    expected = {"emb.weight", "fc.weight"} | {f"rnn.{name}" for name, _ in rnn.named_parameters()
                                              if name.startswith("weight")}
    assert set(sparse.masks) == expected
    numel = {name: mask.numel() for name, mask in sparse.masks.items()}
    counts = modes.nonzero_counts(numel, modes.uniform_densities(numel, 0.4))
    train(model, tokens, opt, sparse, 8)
    assert sparse.sparsifier.updates == 2  # steps 2 and 4: RigL stops at 75% of the run (step 6)
    assert {name: int(mask.sum()) for name, mask in sparse.masks.items()} == counts
    assert all(abs(counts[name] - 0.4 * numel[name]) < 1 for name in numel)
    assert_masked(model, opt, sparse)
    assert all(name.endswith("_mask") is False for name, _ in model.named_parameters())
    assert any(name == "rnn.weight_hh_l0_mask" for name, _ in model.named_buffers())  # masks live in state_dict


@pytest.mark.parametrize("method, settings", [
    ("static", {}), ("set", {"steps_per_epoch": 2}), ("snfs", {"steps_per_epoch": 2}),
    ("dsr", {"steps_per_epoch": 2}), ("selfish", {"steps_per_epoch": 2}), ("gmp", {"update_every": 2})])
def test_every_mask_method_runs_on_a_user_model(method, settings):
    model, tokens = make(("lstm", 2, True, True, False))
    opt = torch.optim.SGD(model.parameters(), 0.5, momentum=0.9)
    sparse = sparsernn.sparsify(model, opt, method, density=0.5, total_steps=8, **settings)
    train(model, tokens, opt, sparse, 8)
    assert sparse.density() == pytest.approx(0.5, abs=1e-2)
    assert_masked(model, opt, sparse)


def test_weights_by_filter_or_pairs_and_resume():
    model, tokens = make(("gru", 2, False, True, False))
    opt = torch.optim.Adam(model.parameters(), 0.01)
    recurrent = sparsernn.sparsify(model, opt, "static", 0.5, weights=lambda name, p: name.startswith("rnn."))
    assert set(recurrent.masks) == {f"rnn.weight_{k}_l{n}" for k in ("ih", "hh") for n in (0, 1)}
    model, tokens = make(("gru", 2, False, True, False))
    opt = torch.optim.Adam(model.parameters(), 0.01)
    sparse = sparsernn.sparsify(model, opt, "rigl", 0.5, total_steps=12, update_every=2,
                                weights=[(model.rnn, "weight_hh_l1"), (model.fc, "weight")])
    assert set(sparse.masks) == {"rnn.weight_hh_l1", "fc.weight"}
    train(model, tokens, opt, sparse, 3)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), sparse.state_dict()))
    torch.manual_seed(5)  # the same dropout draws in both continuations
    train(model, tokens, opt, sparse, 5)
    resumed, _ = make(("gru", 2, False, True, False), seed=1)
    opt2 = torch.optim.Adam(resumed.parameters(), 0.01)
    again = sparsernn.sparsify(resumed, opt2, "rigl", 0.5, total_steps=12, update_every=2,
                               weights=[(resumed.rnn, "weight_hh_l1"), (resumed.fc, "weight")])
    resumed.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    again.load_state_dict(saved[2])
    torch.manual_seed(5)
    train(resumed, tokens, opt2, again, 5)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_toolkits_own_model_takes_the_same_verbs():
    """One vocabulary for both: sparsify masks what the toolkit's own runs mask (the model states its stack)."""
    model = RNNLanguageModel(ModelConfig(cell="lstm", hidden_sizes=[HIDDEN, HIDDEN], embedding_size=EMBED), VOCAB)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    sparse = sparsernn.sparsify(model, opt, "static", 0.5)
    assert list(sparse.masks) == list(prunable_parameters(model))
    assert [layer.name for layer in sparsernn.discover(model)] == ["layers.0", "layers.1"]
    tokens = torch.randint(0, VOCAB, (BATCH, STEPS))
    assert sparsernn.lyapunov_spectrum(model, tokens).exponents.shape == (4 * HIDDEN,)


@pytest.mark.parametrize("settings, names", [
    ({"method": "iss"}, "method iss: not a mask method"),
    ({"method": "set"}, "method set updates its masks at epoch ends"),
    ({"method": "rigl", "death": "nope"}, "sparsify: sparsity.death"),
    ({"method": "rigl", "nope": 1}, "sparsify: sparsity.nope: unknown field"),
    ({"method": "rigl", "total_steps": None}, "total_steps: method rigl")])
def test_sparsify_refuses_bad_settings_in_one_line(settings, names):
    model, _ = make(("lstm", 1, False, True, False))
    with pytest.raises(ConfigError) as error:
        sparsernn.sparsify(model, torch.optim.SGD(model.parameters(), 0.1), **{"total_steps": 10, **settings})
    one_line_refusal(error, names)


# ---- spectrum -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in MATRIX if not (c[1] == 2 and c[4])], ids=_id)
@pytest.mark.parametrize("state", ["hc", "h"])
def test_spectrum_of_a_deep_module_equals_its_split_form(case, state):
    cell, layers, _, _, bidirectional = case
    model, tokens = make(case)
    spectrum = sparsernn.lyapunov_spectrum(model, tokens, state=state)
    per_layer = HIDDEN * (2 if cell == "lstm" and state == "hc" else 1)  # a bidirectional top: its forward half
    assert spectrum.exponents.shape == (layers * per_layer,)
    split = sparsernn.lyapunov_spectrum(Split(model), tokens, state=state)
    torch.testing.assert_close(spectrum.exponents, split.exponents, atol=1e-5, rtol=0)
    assert torch.isfinite(spectrum.exponents).all() and spectrum.samples == BATCH and spectrum.steps == STEPS


def test_a_relu_rnn_is_its_own_cell_type():
    model, tokens = make(("rnn_tanh", 2, False, True, False))
    model.rnn.nonlinearity = "relu"
    assert [layer.cell for layer in sparsernn.discover(model, tokens)] == ["rnn_relu", "rnn_relu"]
    torch.testing.assert_close(sparsernn.lyapunov_spectrum(model, tokens).exponents,
                               sparsernn.lyapunov_spectrum(Split(model), tokens).exponents, atol=1e-5, rtol=0)


def brute_force_spectrum(rnn: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The textbook QR algorithm on the Jacobian autograd takes of the module's own step (one sample)."""
    rnn = rnn.double()
    lstm = isinstance(rnn, nn.LSTM)
    layers, hidden = rnn.num_layers, rnn.hidden_size

    def step(state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        blocks = state.view(layers, 2 if lstm else 1, 1, hidden)  # per layer [h; c]
        hx = (blocks[:, 0].contiguous(), blocks[:, 1].contiguous()) if lstm else blocks[:, 0].contiguous()
        _, new = rnn(x.view(1, 1, -1), hx)
        return (torch.stack(new, 1) if lstm else new.unsqueeze(1)).reshape(-1)

    state = inputs.new_zeros(layers * hidden * (2 if lstm else 1))
    q, total = torch.eye(state.numel(), dtype=torch.float64), 0
    for x in inputs:
        jacobian = torch.autograd.functional.jacobian(lambda s: step(s, x), state)
        state = step(state, x).detach()
        q, r = torch.linalg.qr(jacobian @ q)
        total = total + r.diagonal().abs().log()
    return (total / len(inputs)).sort(descending=True).values


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_spectrum_equals_the_textbook_algorithm_on_the_module_itself(cell):
    model, tokens = make((cell, 2, True, True, False))
    spectrum = sparsernn.lyapunov_spectrum(model, tokens[:1], basis="stack")
    expected = brute_force_spectrum(model.rnn, model.emb(tokens[0]).detach().double())
    torch.testing.assert_close(spectrum.exponents, expected, atol=1e-6, rtol=0)


class Parallel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMBED)
        self.a, self.b = nn.GRU(EMBED, HIDDEN), nn.GRU(EMBED, HIDDEN)
        self.fa, self.fb = nn.Linear(HIDDEN, VOCAB), nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens):
        x = self.emb(tokens)
        return self.fa(self.a(x)[0]) + self.fb(self.b(x)[0])


@pytest.mark.parametrize("model, names", [(lambda: Parallel(), "b[0]: does not read a[0]"),
                                          (lambda: UserModel("lstm", 2, False, True, True), "rnn[0]:")])
def test_spectrum_refuses_what_is_not_one_forward_stack(model, names):
    with pytest.raises(DiscoveryError) as error:
        sparsernn.lyapunov_spectrum(model(), torch.randint(0, VOCAB, (STEPS, BATCH)))
    one_line_refusal(error, names)
