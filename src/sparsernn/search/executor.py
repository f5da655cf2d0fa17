"""Executors: "train this candidate to epoch E and compute its spectrum after every epoch".

A ``Job`` names a run config, its run directory and the epoch to reach; the executor returns the
candidate's ``Progress`` (its spectra and validation metrics per epoch, the seconds it spent). The
work itself is ``advance``: it continues the run from its checkpoint (``Trainer.open``), never from
scratch, and keeps the spectra in ``spectra.json`` in the run directory, so a job is idempotent and a
killed one resumes losing at most the epoch in progress. ``LocalExecutor`` runs jobs one by one or in
worker processes; a cluster executor (Ray) is another class with the same ``run``.
"""

from __future__ import annotations

import json
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from sparsernn.errors import SparsernnError

SPECTRA = "spectra.json"


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


@dataclass
class Progress:
    name: str
    epoch: int = 0
    spectra: dict[str, dict[int, list[float | None]]] = field(default_factory=dict)  # state -> epoch -> exponents
    val_loss: dict[int, float] = field(default_factory=dict)
    val_ppl: dict[int, float] = field(default_factory=dict)
    train_seconds: float = 0.0  # spent by this job: training and validation
    ls_seconds: float = 0.0  # spent by this job: spectra
    epochs_trained: int = 0  # by this job
    failed: str | None = None


class Executor(Protocol):
    def run(self, jobs: list[Job]) -> list[Progress]:
        """Run every job; one Progress per job, in order. A job that fails says why (``failed``)."""


CORPORA: dict[str, Any] = {}


def corpus_for(directory: str):
    from sparsernn.data import load_corpus

    if directory not in CORPORA:
        CORPORA[directory] = load_corpus(directory)
    return CORPORA[directory]


def _read_spectra(run_dir: Path) -> dict[str, dict[int, list[float | None]]]:
    path = run_dir / SPECTRA
    if not path.is_file():
        return {}
    return {state: {int(e): v for e, v in by_epoch.items()} for state, by_epoch in json.loads(path.read_text()).items()}


def advance(job: Job) -> Progress:
    """Train ``job``'s run to ``job.to_epoch`` (continuing it), with a spectrum after every epoch (and of
    the initial model, epoch 0)."""
    from sparsernn.config import upgrade_stored_config, validate
    from sparsernn.dynamics import lyapunov_spectrum
    from sparsernn.files import atomic_write_text
    from sparsernn.runs import RunDir
    from sparsernn.train import Trainer

    progress = Progress(job.name)
    run_dir = Path(job.run_dir)
    try:
        config = validate(upgrade_stored_config(job.config), f"{job.name} config")
        task_data = corpus_for(config.data.dir)
        trainer = Trainer.open(run_dir, task_data, config)
        spectra = _read_spectra(run_dir)

        def measure(epoch: int) -> None:
            if job.ls is None:
                return
            started = time.perf_counter()
            sequences = trainer.task.lyapunov_inputs(job.ls.samples, job.ls.steps)
            for state in job.ls.states:
                if epoch in spectra.get(state, {}):
                    continue
                with trainer.evaluation_weights():
                    spectrum = lyapunov_spectrum(trainer.model, sequences, k=job.ls.k, state=state, basis=job.ls.basis,
                                                 qr_every=job.ls.qr_every if job.ls.k is not None else 1)
                spectra.setdefault(state, {})[epoch] = spectrum.to_dict()["exponents"]
            RunDir(run_dir).create()
            atomic_write_text(run_dir / SPECTRA, json.dumps({s: {str(e): v for e, v in by.items()}
                                                             for s, by in spectra.items()}))
            progress.ls_seconds += time.perf_counter() - started

        measure(trainer.epoch - 1)  # the model as it stands: the initial one, or the last finished epoch
        while trainer.epoch <= min(job.to_epoch, trainer.horizon):
            started = time.perf_counter()
            trainer.fit(until_epoch=trainer.epoch)
            progress.train_seconds += time.perf_counter() - started
            progress.epochs_trained += 1
            measure(trainer.epoch - 1)
        progress.epoch = trainer.epoch - 1
        progress.spectra = spectra
        progress.val_loss = {r["epoch"]: r["val_loss"] for r in trainer.history}
        progress.val_ppl = {r["epoch"]: r["val_ppl"] for r in trainer.history}
    except SparsernnError as exc:
        progress.failed = str(exc)
    except Exception as exc:  # a crash of one candidate must not end the search; its reason is kept
        progress.failed = f"crashed: {type(exc).__name__}: {exc} ({traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()})"
    return progress


def _advance_in_worker(job: Job) -> Progress:
    import torch

    torch.set_num_threads(1)  # workers share the cores
    return advance(job)


class LocalExecutor:
    """Jobs on this machine: one by one in this process (``workers=1``) or in worker processes."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers

    def run(self, jobs: list[Job]) -> list[Progress]:
        if self.workers == 1 or len(jobs) <= 1:
            return [advance(job) for job in jobs]
        with ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            return list(pool.map(_advance_in_worker, jobs))


def progress_dict(progress: Progress) -> dict[str, Any]:
    return asdict(progress)
