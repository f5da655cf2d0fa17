"""Plug-ins from outside the package: a sparsity method, a cell, a task, a search strategy and a sampler
defined in this file register, run end to end through the CLI or the API, and appear in the listings, without a
line of the package edited. (docs/architecture.md: the recipes these tests exercise.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import Field

from sparsernn.config import DataConfig

from sparsernn.search import Search, SearchSettings
from sparsernn.search.samplers import SAMPLERS, Sampler
from sparsernn.search.space import SearchSpace
from sparsernn.search.strategies import STRATEGIES, Strategy
from sparsernn.search.strategies._steps import start, train
from sparsernn.sparsity import METHODS, Method
from sparsernn.sparsity.masks import MaskedSparsifier
from sparsernn.sparsity.registry import needs_density
from sparsernn.tasks import Metric, Task

from conftest import cli_in_process
from test_search import FAST, base_config


# --- a sparsity method: keep the largest weights of each matrix at the start, never change the mask ---
class MagnitudeOnce(MaskedSparsifier):
    def __init__(self, density: float, prunable, seed: int) -> None:
        super().__init__(prunable, seed)
        self.density = density

    def init_masks(self) -> None:
        for name, param in self.masking.params.items():
            keep = max(1, round(self.density * param.numel()))
            threshold = param.detach().abs().flatten().kthvalue(param.numel() - keep + 1).values
            self.masking.set(name, param.detach().abs() >= threshold)


@pytest.fixture
def magnitude_once(monkeypatch):
    method = Method("magnitude_once", "the largest weights at initialisation, a fixed mask (a test's plug-in)",
                    lambda config, steps: MagnitudeOnce(config.sparsity.density, config.sparsity.prunable,
                                                        config.train.seed),
                    fields=(), resolve=needs_density)
    monkeypatch.setitem(METHODS._entries, method.name, method)
    return method


def test_a_method_defined_outside_trains_through_the_cli_and_is_listed(magnitude_once, synthetic_dir, tmp_path):
    result = cli_in_process("train", "--preset", "tiny", "--data-dir", synthetic_dir, "--method", "magnitude_once",
                            "--density", "0.25", "--epochs", "1", "--epoch-tokens", "2000", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    from sparsernn.runs import load_model

    model, config, _, _ = load_model(tmp_path / "run")
    assert config.sparsity.method == "magnitude_once"
    weight = model.get_parameter("decoder.weight")
    assert (weight != 0).float().mean().item() == pytest.approx(0.25, abs=0.01)  # the mask held through training
    listing = cli_in_process("methods")
    assert listing.returncode == 0 and "magnitude_once" in listing.stdout


# --- a search strategy: every candidate to e0, then the best half by validation loss to the end ---
class BestHalf(Strategy):
    name = "best_half"
    description = "the better half after e0 epochs, by validation loss (a test's plug-in)"

    def run(self, state: dict[str, Any]) -> None:
        if state["phase"] == "start":
            start(self, state, "halve")
        if state["phase"] == "halve":
            alive = list(state["alive"])
            results = train(self, alive, self.settings.e0, "halve", state, reference=False)
            losses = {name: results[name].val_loss[self.settings.e0] for name in state["alive"]}
            kept = sorted(losses, key=lambda n: (losses[n], n))[: max(1, len(losses) // 2)]
            for name in set(losses) - set(kept):
                self.store.finish(name, "eliminated", losses[name])
            state["alive"], state["phase"] = kept, "final"
            self.store.save_state(state)


# --- a sampler: always the first value of each choice and the low end of each range ---
def _corner(space: SearchSpace, archive, count: int, seed: int, taken, pruned):
    point = {key: values[0] for key, values in space.choices.items()}
    point.update({key: r.low for key, r in space.ranges.items()})
    return [dict(point) for _ in range(count)]


@pytest.fixture
def plugins(monkeypatch):
    monkeypatch.setitem(STRATEGIES._entries, BestHalf.name, BestHalf)
    monkeypatch.setitem(SAMPLERS._entries, "corner", Sampler("corner", "a test's plug-in", _corner))


def test_a_strategy_and_a_sampler_defined_outside_run_a_search(plugins, synthetic_dir, tmp_path):
    space = SearchSpace.model_validate({"density": 0.4, "choices": {"method": ["set", "rigl"]},
                                        "ranges": {"death_rate": {"low": 0.3, "high": 0.6}}})
    settings = SearchSettings(**{**FAST, "n": 4, "survivors": 1, "strategy": "best_half", "sampler": "random",
                                 "rank_by": "loss", "dense_to_end": False})
    search = Search(tmp_path / "s", space, base_config(synthetic_dir, epochs=3), settings,
                    reference_dir=tmp_path / "references")
    report = search.run()
    rows = {r["name"]: r for r in report["candidates"]}
    assert report["phase"] == "done" and report["settings"]["strategy"] == "best_half"
    assert sorted(r["status"] for r in rows.values()) == ["eliminated", "eliminated", "survivor", "winner"]
    # the two kept are the two lowest validation losses after e0 = 1, and they trained to the end
    assert all(rows[n]["epoch"] == 3 for n, r in rows.items() if r["status"] in ("winner", "survivor"))
    assert all(rows[n]["epoch"] == 1 for n, r in rows.items() if r["status"] == "eliminated")
    at_e0 = {n: r["val_ppl"][1] for n, r in rows.items()}
    kept = [n for n, r in rows.items() if r["status"] != "eliminated"]
    assert max(at_e0[n] for n in kept) <= min(at_e0[n] for n in rows if n not in kept)
    # the sampler is accepted by name and proposes through the same call as the built-in ones
    from sparsernn.search.samplers import propose

    assert propose("corner", space, [], 2, 0) == [{"sparsity.method": "set", "sparsity.death_rate": 0.3}] * 2
    assert SearchSettings(sampler="corner").sampler == "corner"
    with pytest.raises(ValueError, match="'best_half'"):  # an unknown strategy's error lists the plug-in too
        SearchSettings(strategy="nope")


# --- a cell: an Elman RNN with softsign, h' = s(W_ih x + b_ih + W_hh h + b_hh), s(a) = a / (1 + |a|) ---
class SoftsignRNN(torch.nn.Module):
    """One layer over a sequence, PyTorch's fused-RNN parameter names and call: (T, B, I), h -> (T, B, H), h."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        scale = hidden_size ** -0.5
        for name, shape in (("weight_ih_l0", (hidden_size, input_size)), ("weight_hh_l0", (hidden_size, hidden_size)),
                            ("bias_ih_l0", (hidden_size,)), ("bias_hh_l0", (hidden_size,))):
            self.register_parameter(name, torch.nn.Parameter(torch.empty(shape).uniform_(-scale, scale)))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, state = [], h[0]
        for x_t in x:
            pre = x_t @ self.weight_ih_l0.T + self.bias_ih_l0 + state @ self.weight_hh_l0.T + self.bias_hh_l0
            state = torch.nn.functional.softsign(pre)
            out.append(state)
        return torch.stack(out), state.unsqueeze(0)


def _softsign(pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.nn.functional.softsign(pre), 1 / (1 + pre.abs()) ** 2


@pytest.fixture
def softsign_cell(monkeypatch):
    from sparsernn.models.cells import CELLS
    from sparsernn.models.cells.rnn import ElmanRNN

    class Softsign(ElmanRNN):  # the closed-form step and Jacobian of an Elman cell, with its own activation
        def module(self, input_size, hidden_size, bidirectional=False, config=None, layer=0):
            return SoftsignRNN(input_size, hidden_size)

        def describes(self, module):
            return isinstance(module, SoftsignRNN)

    cell = Softsign("softsign", "Elman RNN with softsign (a test's plug-in)", _softsign)
    monkeypatch.setitem(CELLS._entries, cell.name, cell)
    return cell


def test_a_cell_defined_outside_trains_is_listed_and_its_jacobian_is_exact(softsign_cell, synthetic_dir, tmp_path):
    result = cli_in_process("train", "--preset", "tiny", "--data-dir", synthetic_dir, "--cell", "rnn_softsign",
                            "--hidden", "8,6", "--epochs", "1", "--epoch-tokens", "2000", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "rnn_softsign" in cli_in_process("cells").stdout
    from sparsernn.dynamics.jacobians import stack_jacobian, stack_params
    from sparsernn.runs import load_model

    model, config, _, _ = load_model(tmp_path / "run")
    assert config.model.cell == "rnn_softsign" and isinstance(model.layers[0], SoftsignRNN)
    model = model.double()
    layers = stack_params(model, torch.float64)
    torch.manual_seed(0)
    x, hs = torch.randn(1, layers[0].w_ih.shape[1], dtype=torch.float64), [torch.randn(1, 8), torch.randn(1, 6)]
    hs = [h.double() for h in hs]
    _, jacobian = stack_jacobian(layers, [(h, None) for h in hs], x, "hc")

    def step(flat: torch.Tensor) -> torch.Tensor:  # the modules themselves, one step, as the ground truth
        h1, h2 = flat[:8], flat[8:]
        y1, n1 = model.layers[0](x.view(1, 1, -1), h1.view(1, 1, 8))
        _, n2 = model.layers[1](y1, h2.view(1, 1, 6))
        return torch.cat([n1.view(-1), n2.view(-1)])

    expected = torch.autograd.functional.jacobian(step, torch.cat([hs[0][0], hs[1][0]]))
    torch.testing.assert_close(jacobian[0], expected, rtol=0, atol=1e-9)


# --- a task: delayed recall, with settings of its own: read a stream of symbols, name the one `delay` steps back ---
class RecallSettings(DataConfig):
    """The data section of delayed recall (the shared fields, and its own)."""

    delay: int = Field(2, gt=0, description="recall: how many steps back the target symbol is")
    symbols: int = Field(6, ge=2, description="recall: alphabet size")
    sequences: int = Field(320, gt=0, description="recall: training sequences (of data.bptt steps)")


@dataclass
class RecallData:
    train: torch.Tensor  # (steps, sequences) symbol ids
    valid: torch.Tensor
    test: torch.Tensor


class DelayedRecall(Task):
    name = "delayed_recall"
    description = "delayed recall of generated symbols, scored by recall accuracy (a test's plug-in)"
    primary = Metric("recall", "max", percent=True)
    settings = RecallSettings
    corpus = RecallData

    @classmethod
    def load_data(cls, config):
        d, generator = config.data, torch.Generator().manual_seed(config.train.seed)
        split = [torch.randint(d.symbols, (d.bptt, n), generator=generator) for n in (d.sequences, 64, 64)]
        return RecallData(*split), Path(d.dir or "."), None

    def __init__(self, config, corpus: RecallData, device="cpu") -> None:
        self.corpus, self.data, self.device = corpus, config.data, torch.device(device)

    @property
    def steps_per_epoch(self) -> int:
        return self.corpus.train.size(1) // self.data.batch_size

    def build_model(self, config):
        from sparsernn.models.lm import RNNLanguageModel

        return RNNLanguageModel(config, self.data.symbols)

    @classmethod
    def model_from_meta(cls, config, meta):
        from sparsernn.models.lm import RNNLanguageModel

        return RNNLanguageModel(config, meta["symbols"])

    def _loss(self, model, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = inputs.to(self.device)
        logits, _ = model(inputs, model.init_state(inputs.size(1)))
        delay = self.data.delay
        logits, targets = logits[delay:].reshape(-1, logits.size(-1)), inputs[:-delay].reshape(-1)
        return torch.nn.functional.cross_entropy(logits, targets), (logits.argmax(-1) == targets).float().mean()

    def training_loss(self, model, epoch: int, step: int):
        batch = self.corpus.train[:, step * self.data.batch_size:(step + 1) * self.data.batch_size]
        return self._loss(model, batch)[0], batch.numel()

    @torch.no_grad()
    def evaluate(self, model, split: str) -> dict[str, float]:
        model.eval()
        loss, recall = self._loss(model, getattr(self.corpus, split))
        return {"loss": float(loss), "recall": float(recall)}

    def lyapunov_inputs(self, samples: int, steps: int) -> torch.Tensor:
        return self.corpus.valid[:steps, :samples].T

    def meta(self) -> dict[str, Any]:
        return {"symbols": self.data.symbols}


@pytest.fixture
def delayed_recall(monkeypatch):
    from sparsernn.tasks import TASKS

    monkeypatch.setitem(TASKS._entries, DelayedRecall.name, DelayedRecall)
    return DelayedRecall


def test_a_task_defined_outside_trains_through_the_cli_with_its_own_settings_and_is_listed(delayed_recall, tmp_path):
    result = cli_in_process("train", "--preset", "tiny", "--task", "delayed_recall", "--set", "data.delay=1",
                            "--batch-size", "16", "--bptt", "8", "--hidden", "16,16", "--optimizer", "adam", "--lr", "0.02", "--epochs", "3",
                            "--method", "rigl", "--density", "0.5", "--data-dir", tmp_path, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "recall" in result.stdout  # the task's primary metric, as the task formats it
    from sparsernn.runs import load_model

    model, config, _, meta = load_model(tmp_path / "run")
    assert meta["kind"] == "delayed_recall" and type(config.data) is RecallSettings and config.data.delay == 1
    assert config.sparsity.method == "rigl" and config.data.symbols == 6  # its settings' default, recorded
    results = __import__("json").loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_recall"] > 0.6  # it learned to recall (chance: 1/6)
    listing = cli_in_process("tasks")
    assert listing.returncode == 0 and "delayed_recall" in listing.stdout and "delay: 2" in listing.stdout
    # its settings belong to it: another task refuses them, naming the field
    refused = cli_in_process("train", "--preset", "tiny", "--set", "data.delay=1", "--print-config")
    assert refused.returncode != 0 and "data.delay: delay is not used by task lm" in refused.stderr
