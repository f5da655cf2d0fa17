"""A search's candidates trained by a user's own loop: the objective contract and its executor.

The toolkit's executors train candidates with its ``Trainer`` in run directories. ``ObjectiveExecutor``
is the same ``Executor`` seam for a user who already has a training loop (Optuna's objective style):
the search's strategies, ranking rules, samplers, storage and report run unchanged on top of it.

**The contract.** ``objective(candidate, epoch)`` brings ``candidate`` to the end of ``epoch`` and
returns ``(model, score)`` (or a ``Result``): the model as it stands (its ``nn.Module``, whose recurrent
stack the spectrum discovers) and its validation score at that epoch (lower is better unless the
search was told ``direction="maximize"``). The executor calls it with ``epoch`` = 0 (the model as
built, untrained), then 1, 2, ... one epoch at a time, never skipping one, because every epoch's
spectrum and score are evidence for the rankings. Between calls, the objective keeps what it needs
(model, optimizer, ``sparsify`` object, data iterators) in ``candidate.state``, which the executor
holds in memory. After the process is killed and the search is resumed, ``candidate.state`` is None
and ``candidate.epoch`` says the last epoch already recorded: the objective restores from what it
saved in ``candidate.directory`` (a directory of its own, kept between runs) or rebuilds and
retrains to ``candidate.epoch``. Epochs already recorded are never asked for again; candidates the
search finished are never called again.

``candidate.dense`` marks the dense reference (train without ``sparsify``); ``candidate.params`` is
the candidate's point of the space with short names (``{"method": "rigl", "density": 0.33, "death":
"magnitude", ...}``), and ``candidate.sparsify_settings`` the part of it that
``sparsernn.sparsify(model, optimizer, **settings, total_steps=...)`` takes; ``candidate.user`` holds
the user's own hyperparameters the space names ``user.NAME`` (``{"lr": 0.5, "dropout": 0.2}``), sampled,
ranked and resumed with the rest.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from sparsernn.errors import Failure
from sparsernn.files import atomic_write_text
from sparsernn.search.executor import Job, LSOptions, Progress, log_attempt

RECORD = "record.json"  # per candidate directory: each recorded epoch's score, spectra and cost


@dataclass
class Candidate:
    """One candidate as the user's objective sees it (see the module docstring)."""

    name: str  # "r0-03" (round 0, slot 3), "hb2-00", or "reference"
    params: dict[str, Any]  # its point of the space, short names ("method", "death"); dotted for other sections
    directory: Path  # its own directory, kept between runs: where the objective may checkpoint
    dense: bool = False  # the dense reference: train without sparsify
    epoch: int = -1  # the last epoch recorded (-1: none yet; the next call is epoch + 1)
    state: Any = None  # what the objective keeps between calls (None at first and after a restart)

    @property
    def sparsify_settings(self) -> dict[str, Any]:
        """The keyword arguments of ``sparsernn.sparsify`` this candidate stands for (method, density and
        the method's settings; not the other sections' values, such as ``optim.lr``)."""
        return {key: value for key, value in self.params.items() if "." not in key}

    @property
    def user(self) -> dict[str, Any]:
        """The objective's own hyperparameters of this candidate: the space's ``user.*`` keys, short names
        (the dense reference has none: it trains with the objective's defaults)."""
        return {key.removeprefix("user."): value for key, value in self.params.items() if key.startswith("user.")}


@dataclass
class Result:
    """What one call of the objective returns (a ``(model, score)`` tuple means the same)."""

    model: nn.Module
    score: float
    inputs: Any = None  # what ``model(inputs)`` takes for its spectrum, if not the search's ``inputs``


Objective = Callable[[Candidate, int], "Result | tuple[nn.Module, float]"]


def short_params(params: dict[str, Any]) -> dict[str, Any]:
    """A point of the space as the user's objective reads it: ``sparsity.death`` -> ``death``."""
    return {key.removeprefix("sparsity."): value for key, value in params.items()}


@dataclass
class _Record:
    """What is persisted of a candidate after every epoch (its directory's ``record.json``)."""

    scores: dict[int, float] = field(default_factory=dict)
    spectra: dict[str, dict[int, list[float | None]]] = field(default_factory=dict)
    costs: dict[str, dict[int, Any]] = field(default_factory=lambda: {k: {} for k in ("train", "ls", "train_by",
                                                                                         "ls_by")})

    @classmethod
    def read(cls, directory: Path) -> _Record:
        path = directory / RECORD
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls({int(e): v for e, v in data["scores"].items()},
                   {s: {int(e): v for e, v in by.items()} for s, by in data["spectra"].items()},
                   {k: {int(e): v for e, v in by.items()} for k, by in data["costs"].items()})

    def write(self, directory: Path) -> None:
        atomic_write_text(directory / RECORD, json.dumps({"scores": self.scores, "spectra": self.spectra,
                                                          "costs": self.costs}))


class ObjectiveExecutor:
    """Jobs run by calling the user's ``objective`` epoch by epoch in this process (the objective is any
    callable, often a closure, so it is not shipped to worker processes); the dense reference calls
    ``reference`` (default: the objective, with ``candidate.dense`` set). ``inputs``: what the models
    take for their spectra; ``direction``: whether lower or higher scores are better; ``test``: the
    winner's test metrics from its model, if given."""

    passes_user_params = True  # the space's ``user.*`` keys reach the objective (``Candidate.user``)

    def __init__(self, objective: Objective, inputs: Any = None, reference: Objective | None = None,
                 direction: str = "minimize", test: Callable[[nn.Module], dict[str, float]] | None = None) -> None:
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
        self.objective, self.reference, self.inputs = objective, reference or objective, inputs
        self.sign, self.test = (1.0 if direction == "minimize" else -1.0), test
        self.live: dict[str, Candidate] = {}  # candidates called in this process
        self.models: dict[str, nn.Module] = {}  # each one's model as last returned

    def run(self, jobs: list[Job]) -> list[Progress]:
        return [self.advance(job) for job in jobs]

    def advance(self, job: Job) -> Progress:
        """Call the objective for every epoch up to ``job.to_epoch`` not recorded yet, measuring each
        epoch's spectrum when ``job.ls`` asks; a crash of the objective fails this candidate only."""
        directory = Path(job.run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        progress, record = Progress(job.name), _Record.read(directory)
        progress.costs = record.costs
        try:
            self._epochs(job, directory, record, progress)
        except Exception as exc:  # the user's code: its reason is kept, the search goes on
            where = traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()
            progress.failed = str(exc) if isinstance(exc, Failure) else \
                f"crashed: {type(exc).__name__}: {exc} ({where})"
        progress.epoch = max(record.scores, default=0)
        progress.spectra = record.spectra
        # validation from epoch 1, as the toolkit's runs (the untrained model's score is no candidate's best)
        progress.val_metric = {e: v for e, v in record.scores.items() if e > 0}
        progress.val_loss = {e: self.sign * v for e, v in progress.val_metric.items()}  # the rules rank lower first
        return progress

    def _epochs(self, job: Job, directory: Path, record: _Record, progress: Progress) -> None:
        horizon = int(job.config["train"]["epochs"])
        last = min(job.to_epoch, horizon)
        candidate = self._candidate(job, directory, record)
        if candidate.epoch < last:
            progress.attempts = log_attempt(directory, job.to_epoch, candidate.epoch)
        self._measure(job, candidate, record, progress, self.models.get(job.name), candidate.epoch)
        for epoch in range(candidate.epoch + 1, last + 1):
            started = time.perf_counter()
            result = self._call(job, candidate, epoch)
            seconds = time.perf_counter() - started
            record.scores[epoch] = result.score
            record.costs["train"][epoch], record.costs["train_by"][epoch] = seconds, job.owner
            progress.train_seconds += seconds
            progress.epochs_trained += epoch > 0
            candidate.epoch = epoch
            self.models[job.name] = result.model
            self._measure(job, candidate, record, progress, result.model, epoch, result.inputs)
            record.write(directory)

    def _candidate(self, job: Job, directory: Path, record: _Record) -> Candidate:
        """The candidate as this process knows it, or (a new one, or after a restart) with no state."""
        recorded = max(record.scores, default=-1)
        candidate = self.live.get(job.name)
        if candidate is None or candidate.epoch != recorded:  # a restart, or its record was written elsewhere
            dense = job.name == "reference"
            params = {"method": "dense"} if dense else short_params(job.params)
            candidate = self.live[job.name] = Candidate(job.name, params, directory, dense, recorded)
        return candidate

    def _call(self, job: Job, candidate: Candidate, epoch: int) -> Result:
        """One call of the objective, its answer checked (a model and a finite score)."""
        answer = (self.reference if candidate.dense else self.objective)(candidate, epoch)
        result = answer if isinstance(answer, Result) else Result(*answer)
        if not isinstance(result.model, nn.Module):
            raise TypeError(f"the objective returned {type(result.model).__name__} for the model; expected an "
                            "nn.Module (return (model, score))")
        result.score = float(result.score)
        if not math.isfinite(result.score):
            raise Failure(f"its score at epoch {epoch} is {result.score}: not a finite number")
        return result

    def _measure(self, job: Job, candidate: Candidate, record: _Record, progress: Progress, model: nn.Module | None,
                 epoch: int, inputs: Any = None) -> None:
        """The spectra ``job.ls`` asks for of ``model`` at ``epoch`` (those not recorded yet)."""
        ls = job.ls
        if ls is None or model is None or epoch < 0:
            return
        missing = [s for s in ls.states if epoch not in record.spectra.get(s, {})]
        if not missing:
            return
        started = time.perf_counter()
        for state in missing:
            record.spectra.setdefault(state, {})[epoch] = spectrum_of(model, inputs if inputs is not None else
                                                                      self.inputs, ls, state, epoch)
        seconds = time.perf_counter() - started
        progress.ls_seconds += seconds
        record.costs["ls"][epoch] = seconds
        record.costs["ls_by"][epoch] = job.owner
        record.write(candidate.directory)

    def test_metrics(self, job: Job) -> dict[str, float]:
        """The winner's test metrics: ``test(model)`` of its model as last returned in this process
        (none without ``test``, or when it finished before a restart and was not called since)."""
        model = self.models.get(job.name)
        return dict(self.test(model)) if self.test is not None and model is not None else {}


def spectrum_of(model: nn.Module, inputs: Any, ls: LSOptions, state: str, epoch: int) -> list[float | None]:
    """The first ``ls.k`` exponents of ``model``'s spectrum driven by ``inputs`` (all of them when its
    state has fewer), as stored: -inf as None; NaN or +inf fail the candidate (its dynamics blew up)."""
    import torch

    from sparsernn.dynamics.jacobians import state_sizes
    from sparsernn.dynamics.lyapunov import lyapunov_spectrum
    from sparsernn.models.discovery import discover

    if inputs is None:
        raise Failure("the search ranks by LS distance and no inputs were given for the spectrum (inputs=)")
    size = sum(state_sizes(discover(model, inputs), state))
    k = ls.k if ls.k is not None and ls.k <= size else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            spectrum = lyapunov_spectrum(model, inputs, k=k, state=state, basis=ls.basis,
                                         qr_every=ls.qr_every if k is not None else 1)
    finally:
        model.train(was_training)
    exponents = spectrum.exponents
    if bool((exponents.isnan() | exponents.isposinf()).any()):
        raise Failure(f"its Lyapunov spectrum ({state} state) at epoch {epoch} has NaN or +inf exponents: its "
                      "dynamics blew up")
    return spectrum.to_dict()["exponents"]
