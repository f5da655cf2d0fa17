"""Hyperpruning with Lyapunov spectra (LSH): the search over pruning methods and their settings.

A dense reference trains on the same schedule. ``n`` candidates train ``e0`` epochs with a spectrum
after every epoch; each round ranks the candidates by their distance to the reference in LS space
(or by validation loss, ``rank_by="loss"``), eliminates the farther half and inserts ``a // 4`` new
candidates (``a``: the round's count) proposed by the sampler from the archive of (configuration,
score); the inserted ones are brought up to the survivors' epoch, and all train ``ei`` more epochs.
The ranking after which no more than ``survivors`` would remain (halving plus insertions) decides
them instead: the nearest ``survivors`` train to the end of the schedule, continuing from their
checkpoints;
the best by the task's validation metric wins (perplexity for a language model, accuracy for a
tagger), and its test metrics are measured once, at the end.
``strategy="full"`` trains every initial candidate to the end instead (the baseline LSH saves);
``strategy="hyperband"`` is the multi-fidelity search a practitioner reaches for first: ``n``
candidates proposed one at a time, each trained epoch by epoch and stopped by Optuna's Hyperband
pruner on validation loss (brackets from ``e0`` epochs to the full schedule, halving).

Everything lives in the search directory: an Optuna storage (``search.db``, SQLite unless a URL is
given) with one trial per candidate and the search's state, and one run directory per candidate.
Every step is saved before the next; a killed search resumes where it was, losing at most the epoch
in progress, and makes the choices an uninterrupted one makes (samplers are seeded per round and
read only the stored archive; training resumes exactly). While it runs, the driver holds a lease in
that database (``lease.py``): a second driver on the same search is refused rather than racing.

``Search`` is the driver that wires the parts: the candidate store (``study.py``), the cost ledger
(``ledger.py``), the strategy (``strategies/``, one per ``--strategy``), the sampler (``samplers.py``),
the ranking rule (``ranking.py``), the executor that trains candidates (``executor.py``) and the
report (``report.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import optuna

from sparsernn.config import RunConfig, upgrade_stored_config, validate
from sparsernn.errors import ConfigError
from sparsernn.progress import Reporter, SilentReporter
from sparsernn.search.executor import Executor, LocalExecutor
from sparsernn.search.lease import Lease
from sparsernn.search.ledger import Ledger, new_budget
from sparsernn.search.ranking import RULES
from sparsernn.search.report import best_seen, candidate_rows, leaderboard, search_report, write_report
from sparsernn.search.settings import SearchSettings, check_start, local_workers
from sparsernn.search.space import SearchSpace
from sparsernn.search.storage import DB
from sparsernn.search.strategies import STRATEGIES, Strategy, final
from sparsernn.search.study import CandidateStore, check_search_dir, dense_config
from sparsernn.tasks.base import Metric


class Search:
    """One hyperpruning search in ``out_dir``; ``Search.resume(out_dir)`` continues a stopped one."""

    def __init__(self, out_dir: str | Path, space: SearchSpace | None = None, base: RunConfig | None = None,
                 settings: SearchSettings | None = None, storage: str | None = None,
                 reference_dir: str | Path | None = None, executor: Executor | None = None,
                 reporter: Reporter | None = None, lease_seconds: float = 60.0, metric: Metric | None = None) -> None:
        self.out = Path(out_dir)
        self.lease_seconds = lease_seconds
        starting = space is not None or base is not None  # else a resume: it only reads until it runs
        if starting:
            check_search_dir(self.out)
            if space is not None and base is not None:  # before anything is written
                check_start(space, base, settings or SearchSettings())
            if space is not None and space.user_keys() and not getattr(executor, "passes_user_params", False):
                raise ConfigError(f"space: {space.user_keys()[0]}: a hyperparameter of a user's own objective; only "
                                  "sparsernn.hyperprune(objective, space) hands it to a training loop")
        elif not self.out.is_dir():
            raise ConfigError(f"{self.out}: no search to resume here (not a directory)")
        self.store = CandidateStore(self.out, storage, create=starting, lease_seconds=lease_seconds)
        if "settings" in self.store.attrs:  # a search that exists: its own definition wins, nothing may change it
            if space is not None or base is not None or settings is not None:
                raise ConfigError(f"{self.out}: holds a search already; continue it with --resume {self.out}")
            self._load()
        else:
            if not starting:
                raise ConfigError(f"{self.out}: its search never completed its start (no settings stored); "
                                  "start it again with --out")
            if space is None or base is None:
                raise ConfigError(f"{self.out}: a new search needs both a space and a base config")
            self._define(space, base, settings or SearchSettings(), reference_dir, metric)
        self.store.bind(self.space, self.base, self.reference_dir, self.own_metric)
        self.metric = self.store.metric
        self._owner = self.store.owner
        self.executor = executor or LocalExecutor(local_workers(self.settings.workers, self.base.train.device,
                                                                self.settings.n))
        self.reporter = reporter or SilentReporter()

    def _load(self) -> None:
        """The definition of the search stored here."""
        stored = self.store.attrs
        self.space = SearchSpace.model_validate(stored["space"])
        self.base = validate(upgrade_stored_config(stored["base"]), f"{self.out} base config")
        # a search stored before these settings existed continues as it began: each rule alone,
        # no dense reference past the rounds
        self.settings = SearchSettings.model_validate({"keep_best": False, "dense_to_end": False,
                                                       **stored["settings"]})
        self.reference_dir = Path(stored["reference_dir"])
        self.own_metric = Metric(**stored["metric"]) if "metric" in stored else None

    def _define(self, space: SearchSpace, base: RunConfig, settings: SearchSettings,
                reference_dir: str | Path | None, metric: Metric | None = None) -> None:
        """A new search's definition, stored before anything else (``metric``: candidates are compared by
        it, not by the task's primary metric; stored, so a resume compares them alike)."""
        self.space, self.base, self.settings, self.own_metric = space, base, settings, metric
        root = Path(reference_dir) if reference_dir is not None else self.out.parent / "references"
        self.reference_dir = root / self._reference_key()
        state = {"phase": "start", "round": 0, "epoch": settings.e0, "alive": [], **new_budget()}
        self.store.define([("space", space.model_dump(mode="json")), ("base", base.to_dict()),
                           ("reference_dir", str(self.reference_dir.resolve())), ("state", state),
                           *((("metric", {"name": metric.name, "goal": metric.goal}),) if metric else ()),
                           ("settings", settings.model_dump(mode="json"))])

    @classmethod
    def resume(cls, out_dir: str | Path, storage: str | None = None, executor: Executor | None = None,
               reporter: Reporter | None = None, lease_seconds: float = 60.0) -> Search:
        if not (Path(out_dir) / DB).is_file() and storage is None:
            raise ConfigError(f"{out_dir}: no search to resume here (no {DB})")
        return cls(out_dir, storage=storage, executor=executor, reporter=reporter, lease_seconds=lease_seconds)

    # ---- stored state ---------------------------------------------------------------------------

    @property
    def study(self) -> optuna.Study:
        return self.store.study

    @property
    def storage(self) -> str:
        """The storage's URL."""
        return self.store.url

    @property
    def study_name(self) -> str:
        return self.store.study_name

    @property
    def state(self) -> dict[str, Any]:
        return self.store.state

    @property
    def _lease(self) -> Lease | None:
        return self.store.lease

    @_lease.setter
    def _lease(self, lease: Lease | None) -> None:
        self.store.lease = lease

    def _save_state(self, state: dict[str, Any]) -> None:
        self.store.save_state(state)

    def _reference_key(self) -> str:
        dense = dense_config(self.base).to_dict()
        for volatile in ("device", "log_interval", "checkpoint_every"):
            dense["train"].pop(volatile, None)
        ls = self.settings.ls_options()
        return "dense-" + hashlib.sha256(json.dumps([dense, ls and ls.__dict__], sort_keys=True,
                                                    default=list).encode()).hexdigest()[:12]

    def candidates(self) -> dict[str, optuna.trial.FrozenTrial]:
        """Every candidate's trial as stored (one read of the storage)."""
        return self.store.candidates()

    def candidate_config(self, name: str) -> RunConfig:
        return self.store.candidate_config(name)

    # ---- what it shows ---------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate: its point of the space, status, epoch, scores and validation metric
        (keys named after it: ``val_ppl`` and ``best_val_ppl`` for a language model)."""
        return candidate_rows(self.store)

    def best_seen(self, rows: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """The best validation score any candidate showed, at any epoch: ``{name, epoch, value, status,
        eliminated}`` (``eliminated``: the epoch and rule that removed it, if they did)."""
        return best_seen(rows if rows is not None else self.rows(), self.metric)

    def leaderboard(self, scores: dict[str, float] | None = None):
        return leaderboard(self.rows(), self.settings.sampler, self.settings.rank_by, self.metric.name, scores)

    def report(self) -> dict[str, Any]:
        """Where the search stands: candidates, winner and its test metrics, budget, overhead, time to target."""
        return search_report(self.store, self.settings, self.state)

    # ---- the work -------------------------------------------------------------------------------

    def strategy(self) -> Strategy:
        """The search's strategy, given the store, a ledger, the executor, the ranking rule and the reporter."""
        return STRATEGIES[self.settings.strategy](self.store, Ledger(self._owner), self.executor,
                                                  RULES[self.settings.rank_by], self.settings, self.reporter)

    def run(self) -> dict[str, Any]:
        """Run (or continue) the search to its end, holding its lease; returns the report."""
        with self.store.hold() as lease:
            self._lease = lease
            try:
                return self._run()
            finally:
                self._lease = None
                if hasattr(self.executor, "close"):  # worker processes end with the search
                    self.executor.close()

    def _run(self) -> dict[str, Any]:
        state = self.state
        strategy = self.strategy()
        if state["phase"] not in ("final", "done"):
            strategy.run(state)  # to phase "final"
        if state["phase"] == "final":
            final(strategy, state)
        return write_report(self.out, self.report())
