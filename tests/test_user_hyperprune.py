"""Hyperpruning a user's own training loop (issue 27, point 2): ``sparsernn.hyperprune`` on an objective,
and ``sparsernn.integrations.optuna.LSPruner`` in a plain Optuna study. Tiny models, one thread."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zlib
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

import sparsernn
from sparsernn.errors import ConfigError
from sparsernn.integrations.optuna import LSPruner
from sparsernn.search import Search
from sparsernn.search.ls_space import ls_distances
from sparsernn.search.objective import RECORD, Candidate

VOCAB, STEPS, EPOCHS = 10, 3, 3
SPACE = {"density": 0.5, "choices": {"method": ["static", "set", "rigl"], "init": ["uniform", "er"]},
         "ranges": {"death_rate": {"low": 0.2, "high": 0.6}}, "fixed": {"update_every": 2}}
FAST = {"n": 4, "e0": 1, "ei": 1, "survivors": 1, "epochs": EPOCHS, "sampler": "random", "k": 4, "seed": 1}
INPUTS = torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))


class TinyLM(nn.Module):
    """A user's model: the attribute names are the user's own."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.rnn, self.fc = nn.Embedding(VOCAB, 6), nn.LSTM(6, 6, batch_first=True), nn.Linear(6, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(self.emb(x))[0])


class Killed(BaseException):
    """Stands for the process being killed (not an error of one candidate)."""


def objective_for(calls: list[tuple[str, int]], kill_at: int | None = None):
    """The user's loop: build (epoch 0), then one epoch per call; a checkpoint in the candidate's directory
    after every call, read back when the state was lost (a restart)."""
    data = torch.randint(0, VOCAB, (4, 9), generator=torch.Generator().manual_seed(0))

    def objective(candidate: Candidate, epoch: int):
        if kill_at is not None and len(calls) == kill_at:
            raise Killed
        if candidate.state is None:
            torch.manual_seed(zlib.crc32(candidate.name.encode()))
            model = TinyLM()
            opt = torch.optim.SGD(model.parameters(), lr=0.5)
            sparse = None if candidate.dense else sparsernn.sparsify(
                model, opt, total_steps=EPOCHS * STEPS, steps_per_epoch=STEPS, **candidate.sparsify_settings)
            if candidate.epoch >= 0:  # a restart: continue from the checkpoint
                saved = torch.load(candidate.directory / "ckpt.pt", weights_only=False)
                model.load_state_dict(saved["model"])
                opt.load_state_dict(saved["opt"])
                if sparse is not None:
                    sparse.load_state_dict(saved["sparse"])
            candidate.state = (model, opt, sparse)
        model, opt, sparse = candidate.state
        torch.manual_seed(zlib.crc32(candidate.name.encode()) + epoch)  # an epoch's randomness: its own, resumed or not
        loss_of = lambda: nn.functional.cross_entropy(model(data[:, :-1]).reshape(-1, VOCAB), data[:, 1:].reshape(-1))
        for _ in range(STEPS if epoch > 0 else 0):
            opt.zero_grad()
            loss_of().backward()
            opt.step()
            if sparse is not None:
                sparse.step()
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "sparse": sparse.state_dict() if sparse is not None else None}, candidate.directory / "ckpt.pt")
        calls.append((candidate.name, epoch))
        with torch.no_grad():
            return model, float(loss_of())

    return objective


def test_rounds_eliminate_the_farther_half_by_the_ls_rule(tmp_path):
    calls: list[tuple[str, int]] = []
    result = sparsernn.hyperprune(objective_for(calls), SPACE, inputs=INPUTS, rank_by="ls", keep_best=False,
                                  out=tmp_path / "s", **FAST)
    rows = {row["name"]: row for row in result.candidates}
    eliminated = [row for row in rows.values() if row["status"] == "eliminated"]
    assert eliminated and result.winner in rows and rows[result.winner]["status"] == "winner"
    for epoch in {row["eliminated"]["epoch"] for row in eliminated}:
        ranked = {name: row["scores"][epoch] for name, row in rows.items() if epoch in row["scores"]}
        out = [n for n in ranked if rows[n]["eliminated"] and rows[n]["eliminated"]["epoch"] == epoch]
        assert min(ranked[n] for n in out) >= max(ranked[n] for n in ranked if n not in out)
        # the scores are the LS distances of the spectra the objective's models had
        records = {n: json.loads((tmp_path / "s" / "candidates" / n / RECORD).read_text()) for n in ranked}
        reference = json.loads(next((tmp_path / "s" / "reference").glob(f"*/{RECORD}")).read_text())
        spectra = lambda record: {int(e): v for e, v in record["spectra"]["h"].items()}
        distances, _ = ls_distances(spectra(reference), {n: spectra(r) for n, r in records.items()}, epoch, "pca2", 4)
        assert distances == pytest.approx(ranked)
    assert result.report["winner_config"] == result.params and result.params["density"] == 0.5
    assert len(calls) == len(set(calls))  # no epoch of any candidate trained twice
    winner_epochs = sorted(e for n, e in calls if n == result.winner)
    assert winner_epochs == list(range(EPOCHS + 1)) and isinstance(result.model, TinyLM)


def test_a_killed_search_resumes_without_retraining_and_ends_as_an_uninterrupted_one(tmp_path):
    whole: list[tuple[str, int]] = []
    uninterrupted = sparsernn.hyperprune(objective_for(whole), SPACE, inputs=INPUTS, out=tmp_path / "a", **FAST)
    first: list[tuple[str, int]] = []
    with pytest.raises(Killed):
        sparsernn.hyperprune(objective_for(first, kill_at=9), SPACE, inputs=INPUTS, out=tmp_path / "b", **FAST)
    second: list[tuple[str, int]] = []  # a new process: nothing in memory, the checkpoints on disk
    resumed = sparsernn.hyperprune(objective_for(second), SPACE, inputs=INPUTS, out=tmp_path / "b", **FAST)
    assert len(first) == 9 and not set(first) & set(second)
    assert sorted(first + second) == sorted(whole)
    assert resumed.winner == uninterrupted.winner and resumed.score == pytest.approx(uninterrupted.score)
    assert [r["status"] for r in resumed.candidates] == [r["status"] for r in uninterrupted.candidates]
    again: list[tuple[str, int]] = []  # a finished search: its report, nothing trained
    assert sparsernn.hyperprune(objective_for(again), SPACE, inputs=INPUTS, out=tmp_path / "b", **FAST).winner == \
        uninterrupted.winner and again == []
    with pytest.raises(ConfigError, match="differs in n"):
        sparsernn.hyperprune(objective_for([]), SPACE, inputs=INPUTS, out=tmp_path / "b", **{**FAST, "n": 5})


def test_the_report_names_the_best_seen_and_the_winner_is_no_worse(tmp_path):
    result = sparsernn.hyperprune(objective_for([]), SPACE, rank_by="loss", out=tmp_path / "s", **FAST)
    values = [(v, row["name"]) for row in result.candidates for v in row["val_score"].values()]
    best, name = min(values)
    assert result.best_seen["value"] == best and result.best_seen["name"] == name
    assert result.score <= best + 1e-12  # keep_best: the best model seen is never eliminated
    stored = json.loads((tmp_path / "s" / "report.json").read_text())
    assert stored["best_seen"]["name"] == name and stored["winner"] == result.winner
    assert not (tmp_path / "s" / "reference").exists()  # ranking by score needs no dense reference


def test_a_crashing_objective_fails_its_candidate_in_one_line(tmp_path):
    def broken(candidate: Candidate, epoch: int):
        raise RuntimeError("out of batteries")

    with pytest.raises(ConfigError, match=r"every candidate failed; r0-00: crashed: RuntimeError: out of batteries"):
        sparsernn.hyperprune(broken, SPACE, rank_by="loss", out=tmp_path / "s", **FAST)
    assert all("out of batteries" in row["failed"] for row in Search(tmp_path / "s").rows())


USER_SPACE = {"density": 0.5, "choices": {"method": ["static", "rigl"], "user.width": [4, 6]},
              "ranges": {"user.lr": {"low": 0.1, "high": 1.0, "log": True}}, "fixed": {"update_every": 2,
                                                                                     "user.dropout": 0.1}}


def test_the_users_own_hyperparameters_are_searched_beside_the_methods(tmp_path):
    """``user.*`` keys of the space (a learning rate, a width, a dropout) reach the objective as
    ``candidate.user``, sampled and ranked with the method's settings; sparsify sees none of them."""
    data = torch.randint(0, VOCAB, (4, 9), generator=torch.Generator().manual_seed(0))
    seen: dict[str, dict] = {}

    def objective(candidate: Candidate, epoch: int):
        if candidate.state is None:
            seen[candidate.name] = dict(candidate.user)
            hp = {"width": 6, "lr": 0.5, "dropout": 0.0, **candidate.user}  # the reference: the defaults
            torch.manual_seed(0)
            model = _Sized(hp["width"], hp["dropout"])
            opt = torch.optim.SGD(model.parameters(), lr=hp["lr"])
            sparse = None if candidate.dense else sparsernn.sparsify(
                model, opt, total_steps=EPOCHS * STEPS, steps_per_epoch=STEPS, **candidate.sparsify_settings)
            candidate.state = model, opt, sparse
        model, opt, sparse = candidate.state
        loss_of = lambda: nn.functional.cross_entropy(model(data[:, :-1]).reshape(-1, VOCAB), data[:, 1:].reshape(-1))
        for _ in range(STEPS if epoch else 0):
            opt.zero_grad()
            loss_of().backward()
            opt.step()
            if sparse is not None:
                sparse.step()
        with torch.no_grad():
            return model, float(loss_of())

    result = sparsernn.hyperprune(objective, USER_SPACE, inputs=INPUTS, out=tmp_path / "s", **FAST)
    assert seen.pop("reference") == {}
    assert len(seen) >= FAST["n"] and all(set(hp) == {"lr", "width", "dropout"} for hp in seen.values())
    assert all(0.1 <= hp["lr"] <= 1.0 and hp["width"] in (4, 6) and hp["dropout"] == 0.1 for hp in seen.values())
    assert len({hp["lr"] for hp in seen.values()}) == len(seen)  # sampled per candidate
    assert {key: result.params[f"user.{key}"] for key in ("lr", "width", "dropout")} == seen[result.winner]
    assert result.model.emb.embedding_dim == seen[result.winner]["width"]


class _Sized(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.emb, self.drop = nn.Embedding(VOCAB, width), nn.Dropout(dropout)
        self.rnn, self.fc = nn.LSTM(width, width, batch_first=True), nn.Linear(width, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.rnn(self.drop(self.emb(x)))[0]))


def test_user_hyperparameters_are_refused_by_the_toolkits_own_search_and_named_properly(tmp_path):
    from sparsernn.config import validate

    space = sparsernn.search.SearchSpace.model_validate(USER_SPACE)
    assert space.user_keys() == ["user.width", "user.lr", "user.dropout"]
    base = validate({"train": {"epochs": 6, "device": "cpu"}}, "test")
    with pytest.raises(ConfigError, match=r"^space: user.width: a hyperparameter of a user's own objective") as info:
        Search(tmp_path / "t", space, base)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"hyperprune space: .*user.a.b: not a config field"):
        sparsernn.hyperprune(lambda c, e: None, {**USER_SPACE, "fixed": {"user.a.b": 1}}, epochs=2)


# ---- LSPruner in a plain Optuna study --------------------------------------------------------------

REFERENCE = {step: [0.0, -0.5, -1.0, -2.0] for step in (1, 2, 3)}
OFFSETS = [0.5, 0.1, 0.9, 0.3, 0.2, 0.4]  # trial i's distance from the reference: its offset (raw distance x 2)


def test_ls_pruner_halves_the_trials_at_each_step_by_their_distance_to_the_reference():
    pruner = LSPruner(REFERENCE, distance="raw", k=4)
    study = optuna.create_study(pruner=pruner)

    def objective(trial: optuna.Trial) -> float:
        offset = OFFSETS[trial.number]
        for step in (1, 2, 3):
            trial.report(1.0 / step, step)
            pruner.observe(trial, step, [x + offset for x in REFERENCE[step]])
            if trial.should_prune():
                raise optuna.TrialPruned()
        return offset

    study.optimize(objective, n_trials=len(OFFSETS))
    states = [t.state for t in study.trials]
    P, C = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE
    # trial 2 (0.9) is in the farther half of {0.5, 0.1, 0.9} at step 1; trial 5 (0.4) of all six
    assert states == [C, C, P, C, C, P]
    assert study.trials[2].last_step == 1 and study.trials[5].last_step == 1


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # PCA of a trial equal to the reference
def test_ls_pruner_measures_a_users_model_and_reads_the_reference_from_the_study():
    pruner = LSPruner(k=4, distance="pca2")
    study = optuna.create_study(pruner=pruner)
    torch.manual_seed(0)
    dense = TinyLM()
    for step in (1, 2):
        pruner.observe_reference(study, step, dense, INPUTS)

    def objective(trial: optuna.Trial) -> float:
        torch.manual_seed(trial.number)
        model = TinyLM()
        with torch.no_grad():  # trial 1 is far from the reference's dynamics: its recurrent weights are scaled up
            model.rnn.weight_hh_l0.mul_(1 + 4 * trial.number)
        for step in (1, 2):
            trial.report(0.0, step)
            exponents = pruner.observe(trial, step, model, INPUTS)
            assert len(exponents) == 4
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 0.0

    study.optimize(objective, n_trials=2)
    assert sorted(study.user_attrs) == ["ls_reference:1", "ls_reference:2"]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    with pytest.raises(ValueError, match="reads no spectra"):
        LSPruner(rule="loss")


# ---- the example -----------------------------------------------------------------------------------

def test_the_user_lstm_lm_example_hyperprunes_its_own_loop(tmp_path):
    script = Path(__file__).resolve().parents[1] / "examples" / "user_lstm_lm.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), "--small", "--out", str(tmp_path / "search")], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["winner"] and math.isfinite(result["winner_val_loss"])
    assert result["winner_val_loss"] <= result["best_seen"]["value"] + 1e-9
    assert result["params"]["method"] == "rigl" and 0.0 < result["density"] < 0.5
