"""Plug-ins from outside the package: a sparsity method, a search strategy and a sampler defined in this
file register, run end to end through the CLI or the API, and appear in the listings, without a
line of the package edited. (docs/architecture.md: the recipes these tests exercise.)"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sparsernn.search import Search, SearchSettings
from sparsernn.search.samplers import SAMPLERS, Sampler
from sparsernn.search.space import SearchSpace
from sparsernn.search.strategies import STRATEGIES, Strategy
from sparsernn.search.strategies._steps import start, train
from sparsernn.sparsity import METHODS, Method
from sparsernn.sparsity.masks import MaskedSparsifier
from sparsernn.sparsity.registry import needs_density

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
