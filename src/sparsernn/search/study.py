"""The candidate store: everything a search keeps in its Optuna study, read and written in one place.

A search is one study (``search.db``, or a study of its own in a shared database): the study's
attributes hold the search's definition (its id, space, base config, reference directory and settings,
the settings written last) and its ``state`` (phase, round, the candidates alive, the cost ledger's
numbers); each candidate is one trial, named by round and slot, holding its point of the space, its
status and what was measured of it (scores, validation metric per epoch). The store also seeds the
samplers (a seed is a pure function of the search's seed and where it is) and checks the driver's
lease before every write of the state.

Strategies and the ``Search`` that wires them both read and write the search through this store, so
that no strategy needs the ``Search`` object itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from pathlib import Path
from typing import Any

import optuna

from sparsernn.config import RunConfig, validate
from sparsernn.errors import ConfigError
from sparsernn.files import atomic_write_text, ensure_directory
from sparsernn.search.lease import Lease
from sparsernn.search.space import SearchSpace
from sparsernn.search.storage import DB, open_study, storage_url
from sparsernn.sparsity import resolve_method
from sparsernn.tasks import primary_metric
from sparsernn.tasks.base import Metric

STUDY = "hyperprune"
SEARCH_ID = "search.id"


def seed_for(*parts: Any) -> int:
    """A sampler's seed from the search's seed and where the search is (round, slot): a resumed search
    proposes what an uninterrupted one does."""
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8], 16)


def check_search_dir(out: Path) -> None:
    """The directory of a new search: not a file, not inside one, not a training run's directory."""
    from sparsernn.runs import RunDir

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file, not a directory")
    if out.is_dir() and not (out / DB).exists() and (RunDir(out).has_run or (out / "config.yaml").is_file()):
        raise ConfigError(f"--out {out}: holds a training run; a search needs a directory of its own")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is a file, not a directory")
            break


def dense_config(base: RunConfig) -> RunConfig:
    """The dense reference's config: the base config with no sparsity."""
    data = base.to_dict()
    data["sparsity"] = {"method": "dense"}
    return resolve_method(validate(data, "dense reference"))


class CandidateStore:
    """The study of the search in ``out`` (at ``storage``, else SQLite in ``out``): created when
    ``create``, else it must exist. ``bind`` gives it the search's space and base config once they are
    known (stored, or given to a new search)."""

    def __init__(self, out: Path, storage: str | None, create: bool, lease_seconds: float = 60.0) -> None:
        self.out = out
        self.lease_seconds = lease_seconds
        self.url = storage_url(storage, out)
        # its own database file holds one search; a shared database (PostgreSQL) holds one per search
        # directory name, so several searches can share a server (another directory of the same name
        # is refused below)
        self.study_name = STUDY if storage is None else f"{STUDY}:{out.resolve().name}"
        if create and storage is None:  # the database lives in the directory
            ensure_directory(out)
        self.study = open_study(self.url, self.study_name, create=create)
        ensure_directory(out)  # with a database elsewhere: once it opened
        stored = self.study.user_attrs
        id_file = out / SEARCH_ID
        here = id_file.read_text().strip() if id_file.is_file() else None
        if "search_id" in stored and here != stored["search_id"]:  # a shared database: same name, another search
            raise ConfigError(f"--storage: its study {self.study_name!r} belongs to another search directory named "
                              f"{out.name!r} (not {out}); give this search a directory of another name")
        self.lease: Lease | None = None  # held while the search runs
        self._ids: dict[str, tuple[int, int, dict[str, Any]]] = {}
        self._finished: set[str] = set()

    # ---- the search's definition ------------------------------------------------------------------

    @property
    def attrs(self) -> dict[str, Any]:
        """What the study holds of the search (one read of the storage)."""
        return self.study.user_attrs

    def define(self, attrs: list[tuple[str, Any]]) -> None:
        """A new search: an id naming it in its directory and its storage, wherever they are, then
        ``attrs`` in order (the last, the settings, marks a complete start)."""
        search_id = uuid.uuid4().hex
        atomic_write_text(self.out / SEARCH_ID, search_id + "\n")
        for key, value in (("search_id", search_id), *attrs):
            self.study.set_user_attr(key, value)

    def bind(self, space: SearchSpace, base: RunConfig, reference_dir: Path, metric: Metric | None = None) -> None:
        """The search's space, base config and dense reference's directory, for what the store derives;
        ``metric``: what candidates are compared by when it is not the task's (a user's objective's score)."""
        self.space, self.base, self.reference_dir = space, base, reference_dir
        # candidates are compared by their task's primary validation metric: perplexity (lower is
        # better) for a language model, accuracy (higher) for a tagger
        self.metric = metric or primary_metric(base)
        # who pays for the epochs this search trains, in the runs' cost ledgers (a search made before
        # searches had an id: its directory)
        self.owner = self.attrs.get("search_id") or str(self.out.resolve())

    def candidate_config(self, name: str) -> RunConfig:
        return self.space.candidate_config(self.base, self.trial(name)[2])

    def point(self, name: str) -> dict[str, Any]:
        """A candidate's settings as it trains: the density, the fixed values and its sampled ones, less
        those its method does not read (what a user's objective is handed)."""
        return {"sparsity.density": self.space.density,
                **self.space.effective({**self.space.fixed, **self.trial(name)[2]})}

    def reference_config(self) -> RunConfig:
        return dense_config(self.base)

    # ---- the state and the lease ------------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        return self.attrs["state"]

    def hold(self) -> Lease:
        """The lease a driver holds while it runs the search (``with store.hold() as lease``)."""
        return Lease(self.url, self.study_name, self.lease_seconds, where=str(self.out))

    def check_lease(self) -> None:
        """Stop, writing nothing more, when another driver has taken the search over."""
        if self.lease is not None and (self.lease.lost or not self.lease.renew()):
            raise ConfigError(f"{self.out}: another driver took this search over (this one stalled for more than "
                              f"{self.lease_seconds:.0f} s); stopping without writing")

    def save_state(self, state: dict[str, Any]) -> None:
        self.check_lease()
        self.study.set_user_attr("state", state)

    # ---- the candidates ---------------------------------------------------------------------------

    def candidates(self) -> dict[str, optuna.trial.FrozenTrial]:
        """Every candidate's trial as stored (one read of the storage)."""
        trials = {t.user_attrs["name"]: t for t in self.study.get_trials(deepcopy=False) if "name" in t.user_attrs}
        for name, trial in trials.items():  # what never changes, or only one way, is kept at hand
            self._ids[name] = (trial._trial_id, trial.number, trial.user_attrs["params"])
            if trial.state.is_finished():
                self._finished.add(name)
        return trials

    def trial(self, name: str) -> tuple[int, int, dict[str, Any]]:
        """``(trial id, number, params)`` of a candidate, read from the storage only when unknown."""
        if name not in self._ids:
            self.candidates()
        return self._ids[name]

    def add(self, points: list[dict[str, Any]], round_: int, prefix: str = "r") -> list[str]:
        """Trials for new points, named by round and slot; adding them again (after a resume) adds nothing."""
        existing = self.candidates()
        names = []
        for slot, params in enumerate(points):
            name = f"{prefix}{round_}-{slot:02d}"
            if name not in existing:
                self.study.enqueue_trial(params, user_attrs={"name": name, "round": round_, "params": params})
            names.append(name)
        self.start_waiting()
        return names

    def start_waiting(self) -> None:
        """Start every waiting trial, also one enqueued just before the search was killed."""
        for _ in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            self.study.ask(self.space.distributions()).set_user_attr("status", "alive")

    def drop_failed(self, state: dict[str, Any]) -> None:
        """Forget candidates that failed: their failure is stored at once, the state only after the round,
        so a search killed in between must not bring them back."""
        trials = self.candidates()
        state["alive"] = [n for n in state["alive"] if trials[n].state != optuna.trial.TrialState.FAIL]

    def set(self, name: str, key: str, value: Any) -> None:
        """An attribute of a running candidate's trial (a finished trial keeps what it had)."""
        trial_id, _, _ = self.trial(name)
        if name not in self._finished:
            optuna.trial.Trial(self.study, trial_id).set_user_attr(key, value)

    def finish(self, name: str, status: str, score: float | None) -> None:
        """A candidate's trial ends: pruned, failed (also without a finite score), or told its score."""
        _, number, _ = self.trial(name)
        if name in self._finished:
            return
        self.set(name, "status", status)
        if status == "pruned":
            self.study.tell(number, state=optuna.trial.TrialState.PRUNED)
        elif status == "failed" or score is None or not math.isfinite(score):
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(number, score)
        self._finished.add(name)
