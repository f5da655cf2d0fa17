"""Executors: "train this candidate to epoch E and compute its spectrum after every epoch".

A ``Job`` names a run config, its run directory and the epoch to reach; the executor returns the
candidate's ``Progress`` (its spectra and validation metrics per epoch, the seconds it spent). The
work itself is ``advance``: it continues the run from its checkpoint (``Trainer.open``), never from
scratch, and keeps the spectra in ``spectra.json`` in the run directory, so a job is idempotent and a
killed one resumes losing at most the epoch in progress. Each start of a job is logged in
``attempts.jsonl`` in the run directory (host, process, the epoch it resumed from), so a job that a
dead worker left and a retry finished shows both attempts. ``LocalExecutor`` runs jobs one by one or
in worker processes; ``sparsernn.search.cluster.RayExecutor`` runs them as Ray tasks.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from sparsernn.errors import Failure, SparsernnError

SPECTRA = "spectra.json"
ATTEMPTS = "attempts.jsonl"
COSTS = "costs.json"  # seconds each epoch's training (and validation) and each spectrum took, by epoch


@dataclass(frozen=True)
class LSOptions:
    """How each spectrum is computed: K validation windows of T steps, the first k exponents, QR every
    ``qr_every`` steps (exact for the leading exponents; see docs/benchmarks.md, Lyapunov engine)."""

    k: int | None = 64
    states: tuple[str, ...] = ("hc",)
    samples: int = 10
    steps: int = 100
    basis: str = "layers"
    qr_every: int = 4


@dataclass(frozen=True)
class Job:
    name: str
    config: dict[str, Any]  # the resolved run config
    run_dir: str
    to_epoch: int
    ls: LSOptions | None  # None: no spectra (ranking by loss)
    owner: str = ""  # who asks (a search's id): the run's cost ledger says who paid for each epoch
    # the candidate's point of the space (fixed values included; {} for the dense reference): what an
    # executor that trains without the toolkit's run config (a user's objective) hands its trainer
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress:
    name: str
    epoch: int = 0
    spectra: dict[str, dict[int, list[float | None]]] = field(default_factory=dict)  # state -> epoch -> exponents
    val_loss: dict[int, float] = field(default_factory=dict)
    val_metric: dict[int, float] = field(default_factory=dict)  # the task's primary metric (LM: perplexity)
    train_seconds: float = 0.0  # spent by this job: training and validation
    ls_seconds: float = 0.0  # spent by this job: spectra
    # what every epoch of the run cost, whoever trained it (this job, an earlier attempt, another
    # search sharing a reference): {"train" | "ls": {epoch: seconds}, "train_by" | "ls_by": {epoch: owner}}
    costs: dict[str, dict[int, Any]] = field(default_factory=dict)
    epochs_trained: int = 0  # by this job
    attempts: int = 1  # starts of this job (to this epoch): more than one after a retry or a resume
    failed: str | None = None


class Executor(Protocol):
    """Trains candidates. It may also define ``test_metrics(job) -> dict[str, float]``: the winner's test
    metrics, measured where it trained (the search's final asks it once); without one, the final reads
    the toolkit's run directory (``run_test_metrics``), so an executor whose candidates live elsewhere
    (a user's objective) says how instead of the search assuming a run directory."""

    def run(self, jobs: list[Job]) -> list[Progress]:
        """Run every job; one Progress per job, in order. A job that fails says why (``failed``)."""


def run_test_metrics(job: Job) -> dict[str, float]:
    """The test metrics of the model in ``job``'s run directory (the toolkit's run, as ``advance`` left it)."""
    from sparsernn.runs import load_model
    from sparsernn.tasks import build_task

    model, config, _, _ = load_model(Path(job.run_dir))
    task = build_task(config, corpus_for(config))
    return task.evaluate(model, "test")


CORPORA: dict[tuple[str, str | None], Any] = {}


def corpus_for(config):
    """The corpus of ``config``'s task and data directory, read once per process (a language model's PTB
    or a tagger's CoNLL files: a search runs on either task)."""
    from sparsernn.tasks import load_data

    key = (config.data.task, config.data.dir)
    if key not in CORPORA:
        CORPORA[key] = load_data(config)[0]
    return CORPORA[key]


def _read_spectra(run_dir: Path) -> dict[str, dict[int, list[float | None]]]:
    path = run_dir / SPECTRA
    if not path.is_file():
        return {}
    return {state: {int(e): v for e, v in by_epoch.items()} for state, by_epoch in json.loads(path.read_text()).items()}


def read_costs(run_dir: Path) -> dict[str, dict[int, Any]]:
    path = Path(run_dir) / COSTS
    stored = json.loads(path.read_text()) if path.is_file() else {}
    return {kind: {int(e): v for e, v in stored.get(kind, {}).items()} for kind in ("train", "ls", "train_by", "ls_by")}


def _write_costs(run_dir: Path, costs: dict[str, dict[int, Any]]) -> None:
    from sparsernn.files import atomic_write_text

    atomic_write_text(run_dir / COSTS, json.dumps({kind: {str(e): v for e, v in by.items()}
                                                   for kind, by in costs.items()}))


def log_attempt(run_dir: Path, to_epoch: int, from_epoch: int) -> int:
    """Append this start of a job to the run's attempts log; returns how many starts the job (the same
    ``to_epoch``) has had, this one included."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ATTEMPTS
    with path.open("a", encoding="utf-8") as log:  # one short line per start: appends don't interleave
        log.write(json.dumps({"to_epoch": to_epoch, "from_epoch": from_epoch, "host": socket.gethostname(),
                              "pid": os.getpid(), "time": time.time()}) + "\n")
    return len(read_attempts(run_dir, to_epoch))


def read_attempts(run_dir: Path, to_epoch: int | None = None) -> list[dict[str, Any]]:
    """The run's logged job starts (those to ``to_epoch`` only, when given); a torn last line is skipped."""
    path = Path(run_dir) / ATTEMPTS
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if to_epoch is None or row["to_epoch"] == to_epoch:
            rows.append(row)
    return rows


@contextmanager
def _run_lock(run_dir: Path):
    """One job at a time on a run directory (two searches sharing a cached reference wait for each
    other, then the second continues from the first's checkpoint)."""
    import errno
    import fcntl
    import warnings

    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as exc:  # some network filesystems have no locks: run unlocked, saying so
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            warnings.warn(f"{run_dir}: no file locks here ({exc.strerror}); two searches must not share this run",
                          stacklevel=3)
        yield


def advance(job: Job) -> Progress:
    """Train ``job``'s run to ``job.to_epoch`` (continuing it), with a spectrum after every epoch (and of
    the initial model, epoch 0)."""
    try:
        with _run_lock(Path(job.run_dir)):
            return _advance(job)
    except OSError as exc:  # the directory cannot be created or locked
        return Progress(job.name, failed=f"crashed: {type(exc).__name__}: {exc}")


def _advance(job: Job) -> Progress:
    from sparsernn.config import upgrade_stored_config, validate
    from sparsernn.train import Trainer

    progress = Progress(job.name)
    run_dir = Path(job.run_dir)
    try:
        config = validate(upgrade_stored_config(job.config), f"{job.name} config")
        task_data = corpus_for(config)
        trainer = Trainer.open(run_dir, task_data, config)
        spectra = _read_spectra(run_dir)
        costs = progress.costs = read_costs(run_dir)  # also a job that fails reports what was trained
        if trainer.epoch <= min(job.to_epoch, trainer.horizon):  # a start with work to do (not a no-op)
            progress.attempts = log_attempt(run_dir, job.to_epoch, trainer.epoch - 1)
        # the model as it stands: the initial one, or the last finished epoch
        _measure(job, trainer, trainer.epoch - 1, spectra, costs, progress)
        while trainer.epoch <= min(job.to_epoch, trainer.horizon):
            started = time.perf_counter()
            trainer.fit(until_epoch=trainer.epoch)
            seconds = time.perf_counter() - started
            progress.train_seconds += seconds
            progress.epochs_trained += 1
            costs["train"][trainer.epoch - 1] = seconds  # an epoch trained again (after a kill) costs once
            costs["train_by"][trainer.epoch - 1] = job.owner
            _write_costs(run_dir, costs)
            _measure(job, trainer, trainer.epoch - 1, spectra, costs, progress)
        progress.epoch = trainer.epoch - 1
        progress.spectra = spectra
        progress.val_loss = {r["epoch"]: r["val_loss"] for r in trainer.history}
        key = f"val_{trainer.task.primary.name}"
        progress.val_metric = {r["epoch"]: r[key] for r in trainer.history}
    except SparsernnError as exc:
        progress.failed = str(exc)
    except Exception as exc:  # a crash of one candidate must not end the search; its reason is kept
        progress.failed = f"crashed: {type(exc).__name__}: {exc} ({traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()})"
    return progress


def _measure(job: Job, trainer, epoch: int, spectra: dict[str, dict[int, Any]], costs: dict[str, dict[int, Any]],
             progress: Progress) -> None:
    """The spectra ``job.ls`` asks for of the model at ``epoch`` (those not measured yet), stored in the
    run directory with what they cost (nothing without ``job.ls``)."""
    if job.ls is None:
        return
    from sparsernn.dynamics import lyapunov_spectrum
    from sparsernn.dynamics.jacobians import stack_params, state_sizes
    from sparsernn.files import atomic_write_text
    from sparsernn.runs import RunDir

    run_dir = Path(job.run_dir)
    started = time.perf_counter()
    sequences = trainer.task.lyapunov_inputs(job.ls.samples, job.ls.steps)
    for state in job.ls.states:
        if epoch in spectra.get(state, {}):
            continue
        # k exponents, or all of them when the state has fewer than k (a small tagger's has 10)
        size = sum(state_sizes(stack_params(trainer.model), state))
        k = job.ls.k if job.ls.k is not None and job.ls.k <= size else None
        with trainer.evaluation_weights():
            spectrum = lyapunov_spectrum(trainer.model, sequences, k=k, state=state, basis=job.ls.basis,
                                         qr_every=job.ls.qr_every if k is not None else 1)
        # stored spectra keep -inf (a direction that collapses to zero) as null; NaN or +inf
        # would read the same, so a spectrum that blew up fails the candidate instead
        if bool((spectrum.exponents.isnan() | spectrum.exponents.isposinf()).any()):
            raise Failure(f"its Lyapunov spectrum ({state} state) at epoch {epoch} has NaN or +inf "
                          "exponents: its dynamics blew up")
        spectra.setdefault(state, {})[epoch] = spectrum.to_dict()["exponents"]
    RunDir(run_dir).create()
    atomic_write_text(run_dir / SPECTRA, json.dumps({s: {str(e): v for e, v in by.items()}
                                                     for s, by in spectra.items()}))
    seconds = time.perf_counter() - started
    progress.ls_seconds += seconds
    costs["ls"][epoch] = costs["ls"].get(epoch, 0.0) + seconds
    costs["ls_by"].setdefault(epoch, job.owner)
    _write_costs(run_dir, costs)


def _advance_in_worker(job: Job, threads: int = 1) -> Progress:
    import torch

    torch.set_num_threads(threads)  # workers share the cores
    return advance(job)


class LocalExecutor:
    """Jobs on this machine: one by one in this process (``workers=1``) or in worker processes, one torch
    thread each. The workers live as long as the executor (``close()`` ends them), so each loads its
    corpus once, not once per round."""

    work = staticmethod(_advance_in_worker)  # what a worker process runs for a job
    test_metrics = staticmethod(run_test_metrics)  # the winner's, from its run directory

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pool_size = 0

    def run(self, jobs: list[Job]) -> list[Progress]:
        if self.workers == 1 or len(jobs) <= 1:
            return [advance(job) for job in jobs]
        size = min(self.workers, len(jobs))  # no more processes than jobs: --workers 10**11 is not 10**11 of them
        if self._pool is not None and size > self._pool_size:  # a larger batch than the pool was made for
            self.close()
        if self._pool is None:
            self._pool, self._pool_size = self._new_pool(size), size
        futures = [self._pool.submit(self.work, job) for job in jobs]
        results: list[Progress | None] = []
        for future in futures:
            try:
                results.append(future.result())
            except BrokenProcessPool:  # a worker died (segfault, out of memory): every pending job fails with it
                results.append(None)
        if any(result is None for result in results):
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            # which job killed it is unknown: each is run again alone, where a death names its job (jobs
            # continue from their checkpoints, so the innocent ones lose at most their epoch in progress)
            for i, job in enumerate(jobs):
                if results[i] is None:
                    results[i] = self._alone(job)
        return results  # type: ignore[return-value]

    @staticmethod
    def _new_pool(workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))

    def _alone(self, job: Job) -> Progress:
        pool = self._new_pool(1)
        try:
            return pool.submit(self.work, job).result()
        except BrokenProcessPool:
            return Progress(job.name, failed="crashed: its worker process died (killed by the system or a signal)")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def progress_dict(progress: Progress) -> dict[str, Any]:
    return asdict(progress)
