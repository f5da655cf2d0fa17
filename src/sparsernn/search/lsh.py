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

What a search spent is read from each run's cost ledger (``costs.json``: seconds per epoch of
training and validation, per spectrum, and which search paid): every epoch a search uses is charged
once, to the phase that used it, including epochs trained before a kill and the epochs of a cached
reference another search trained (``reused_seconds`` in the reference's budget), so that a budget
does not depend on interruptions or on which search ran first. Time-to-target points fall at the
compute spent when the epoch that reached them ended.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sparsernn.config import RunConfig, upgrade_stored_config, validate
from sparsernn.errors import ConfigError
from sparsernn.files import atomic_write_text, ensure_directory
from sparsernn.progress import Reporter, SilentReporter
from sparsernn.search.executor import Executor, Job, LocalExecutor, LSOptions, Progress
from sparsernn.search.lease import Lease
from sparsernn.search.ls_space import ls_distances
from sparsernn.search.ranking import RULES, Evidence, decide
from sparsernn.search.report import leaderboard, write_report
from sparsernn.search.samplers import propose
from sparsernn.search.space import SearchSpace
from sparsernn.search.storage import DB, open_study, storage_url
from sparsernn.sparsity import resolve_method
from sparsernn.tasks import primary_metric

STUDY = "hyperprune"
SEARCH_ID = "search.id"


def _check_search_dir(out: Path) -> None:
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


class SearchSettings(BaseModel):
    """How a search runs (each field is a ``sparsernn hyperprune`` option)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `--k true` is not k = 1

    sampler: Literal["grid", "random", "tpe", "atpe"] = Field("tpe", description="proposes candidates")
    n: int = Field(8, ge=2, description="initial candidates (grid: the whole grid)")
    e0: int = Field(1, ge=1, description="epochs before the first ranking")
    ei: int = Field(1, ge=1, description="epochs between rankings")
    survivors: int = Field(2, ge=1, description="candidates trained to the end")
    rank_by: str = Field("ls", description="the ranking rule of each round (sparsernn.search.ranking): ls (LS "
                         "distance to the dense reference), loss, pareto, rank_sum, ls_band")
    strategy: Literal["lsh", "top_k", "full", "hyperband"] = Field(
        "lsh", description="lsh: eliminate by rounds; top_k: the first ranking keeps the survivors (one-epoch top-K "
        "with --rank-by loss); full: train all to the end; hyperband: Optuna's Hyperband pruner on validation loss, "
        "candidates one at a time")
    distance: Literal["pca2", "raw"] = Field("pca2", description="LS distance: 2-D PCA space, or raw spectra")
    k: int | None = Field(64, ge=1, description="exponents per spectrum (None: all)")
    state: Literal["hc", "h"] = Field(
        "h", description="LSTM state in the spectrum: h (the default: it predicted final perplexity best in "
        "benchmarks/lsh_predictiveness.py) or (h, c)")
    samples: int = Field(10, ge=1, description="validation windows per spectrum")
    steps: int = Field(100, ge=2, description="steps per window")
    dense_to_end: bool = Field(True, description="train the dense reference to the end too, to report the "
                               "winner's gap to dense (charged to the search)")
    keep_best: bool = Field(True, description="never eliminate the candidate holding the best validation score "
                            "seen so far (the winner is then never worse than a model the search saw); false: the "
                            "ranking rule alone decides, as in the paper")
    seed: int = Field(0, description="seed of the samplers")
    workers: int = Field(1, ge=1, description="candidates trained at once (processes)")

    @field_validator("rank_by")
    @classmethod
    def _known_rule(cls, name: str) -> str:
        if name not in RULES:
            raise ValueError(f"expected one of {', '.join(RULES.names())}, got {name!r}")
        return name

    @model_validator(mode="after")
    def _two_exponents_for_a_plane(self) -> SearchSettings:
        if self.distance == "pca2" and self.k is not None and self.k < 2:
            raise ValueError(f"k ({self.k}): the pca2 distance places spectra in a plane, it needs at least 2 "
                             "exponents (or --distance raw)")
        return self

    @model_validator(mode="after")
    def _fewer_survivors(self) -> SearchSettings:
        if self.survivors >= self.n and self.sampler != "grid":
            raise ValueError(f"survivors ({self.survivors}) must be fewer than the initial candidates n ({self.n})")
        return self

    def ls_options(self) -> LSOptions | None:
        return LSOptions(k=self.k, states=(self.state,), samples=self.samples, steps=self.steps) \
            if RULES[self.rank_by].needs_spectra and self.strategy in ("lsh", "top_k") else None


def _check_start(space: SearchSpace, base: RunConfig, settings: SearchSettings) -> None:
    """What a new search is refused for, before it writes anything (no search.db left behind): a
    schedule no longer than e0, a space with nothing to sample."""
    if settings.e0 >= base.train.epochs:
        raise ConfigError(f"e0 ({settings.e0}) must be shorter than the schedule (train.epochs {base.train.epochs})")
    if settings.sampler != "grid" and not space.distributions():
        raise ConfigError(f"search space: nothing to sample for --sampler {settings.sampler} (every value is fixed); "
                          "give choices: or ranges:, or use --sampler grid")


def _seed(*parts: Any) -> int:
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8], 16)


class Search:
    """One hyperpruning search in ``out_dir``; ``Search.resume(out_dir)`` continues a stopped one."""

    def __init__(self, out_dir: str | Path, space: SearchSpace | None = None, base: RunConfig | None = None,
                 settings: SearchSettings | None = None, storage: str | None = None,
                 reference_dir: str | Path | None = None, executor: Executor | None = None,
                 reporter: Reporter | None = None, lease_seconds: float = 60.0) -> None:
        self.out = Path(out_dir)
        self.lease_seconds = lease_seconds
        starting = space is not None or base is not None  # else a resume: it only reads until it runs
        if starting:
            _check_search_dir(self.out)
            if space is not None and base is not None:  # before anything is written
                _check_start(space, base, settings or SearchSettings())
        elif not self.out.is_dir():
            raise ConfigError(f"{self.out}: no search to resume here (not a directory)")
        self.storage = storage_url(storage, self.out)
        # its own database file holds one search; a shared database (PostgreSQL) holds one per search
        # directory name, so several searches can share a server (another directory of the same name
        # is refused below)
        self.study_name = STUDY if storage is None else f"{STUDY}:{self.out.resolve().name}"
        if starting and storage is None:  # the database lives in the directory
            ensure_directory(self.out)
        self.study = open_study(self.storage, self.study_name, create=starting)
        ensure_directory(self.out)  # with a database elsewhere: once it opened
        stored = self.study.user_attrs
        id_file = self.out / SEARCH_ID
        here = id_file.read_text().strip() if id_file.is_file() else None
        if "search_id" in stored and here != stored["search_id"]:  # a shared database: same name, another search
            raise ConfigError(f"--storage: its study {self.study_name!r} belongs to another search directory named "
                              f"{self.out.name!r} (not {self.out}); give this search a directory of another name")
        if "settings" in stored:  # a search that exists: its own definition wins, nothing may change it
            if space is not None or base is not None or settings is not None:
                raise ConfigError(f"{self.out}: holds a search already; continue it with --resume {self.out}")
            self.space = SearchSpace.model_validate(stored["space"])
            self.base = validate(upgrade_stored_config(stored["base"]), f"{self.out} base config")
            # a search stored before these settings existed continues as it began: each rule alone,
            # no dense reference past the rounds
            self.settings = SearchSettings.model_validate({"keep_best": False, "dense_to_end": False,
                                                           **stored["settings"]})
            self.reference_dir = Path(stored["reference_dir"])
        else:
            if not starting:
                raise ConfigError(f"{self.out}: its search never completed its start (no settings stored); "
                                  "start it again with --out")
            if space is None or base is None:
                raise ConfigError(f"{self.out}: a new search needs both a space and a base config")
            self.space, self.base, self.settings = space, base, settings or SearchSettings()
            root = Path(reference_dir) if reference_dir is not None else self.out.parent / "references"
            self.reference_dir = root / self._reference_key()
            search_id = uuid.uuid4().hex  # names this search in its directory and its storage, wherever they are
            atomic_write_text(id_file, search_id + "\n")
            for key, value in (("search_id", search_id), ("space", space.model_dump(mode="json")),
                               ("base", base.to_dict()),
                               ("reference_dir", str(self.reference_dir.resolve())),
                               ("state", {"phase": "start", "round": 0, "epoch": self.settings.e0, "alive": [],
                                          "budget": {}, "time_to_target": [], "compute_seconds": 0.0}),
                               ("settings", self.settings.model_dump(mode="json"))):
                self.study.set_user_attr(key, value)  # settings last: "settings" marks a complete start
        # who pays for the epochs this search trains, in the runs' cost ledgers (a search made before
        # searches had an id: its directory)
        self._owner = self.study.user_attrs.get("search_id") or str(self.out.resolve())
        # candidates are compared by their task's primary validation metric: perplexity (lower is
        # better) for a language model, accuracy (higher) for a tagger
        self.metric = primary_metric(self.base)
        self.executor = executor or LocalExecutor(self.settings.workers)
        self._ids: dict[str, tuple[int, int, dict[str, Any]]] = {}
        self._finished: set[str] = set()
        self._lease: Lease | None = None
        self.reporter = reporter or SilentReporter()

    @classmethod
    def resume(cls, out_dir: str | Path, storage: str | None = None, executor: Executor | None = None,
               reporter: Reporter | None = None, lease_seconds: float = 60.0) -> Search:
        if not (Path(out_dir) / DB).is_file() and storage is None:
            raise ConfigError(f"{out_dir}: no search to resume here (no {DB})")
        return cls(out_dir, storage=storage, executor=executor, reporter=reporter, lease_seconds=lease_seconds)

    # ---- stored state ---------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        return self.study.user_attrs["state"]

    def _check_lease(self) -> None:
        """Stop, writing nothing more, when another driver has taken the search over."""
        if self._lease is not None and (self._lease.lost or not self._lease.renew()):
            raise ConfigError(f"{self.out}: another driver took this search over (this one stalled for more than "
                              f"{self.lease_seconds:.0f} s); stopping without writing")

    def _save_state(self, state: dict[str, Any]) -> None:
        self._check_lease()
        self.study.set_user_attr("state", state)

    def _reference_key(self) -> str:
        dense = self._dense_config().to_dict()
        for volatile in ("device", "log_interval", "checkpoint_every"):
            dense["train"].pop(volatile, None)
        ls = self.settings.ls_options()
        return "dense-" + hashlib.sha256(json.dumps([dense, ls and ls.__dict__], sort_keys=True,
                                                    default=list).encode()).hexdigest()[:12]

    def _dense_config(self) -> RunConfig:
        data = self.base.to_dict()
        data["sparsity"] = {"method": "dense"}
        return resolve_method(validate(data, "dense reference"))

    def candidates(self) -> dict[str, optuna.trial.FrozenTrial]:
        """Every candidate's trial as stored (one read of the storage)."""
        trials = {t.user_attrs["name"]: t for t in self.study.get_trials(deepcopy=False) if "name" in t.user_attrs}
        for name, trial in trials.items():  # what never changes, or only one way, is kept at hand
            self._ids[name] = (trial._trial_id, trial.number, trial.user_attrs["params"])
            if trial.state.is_finished():
                self._finished.add(name)
        return trials

    def _trial(self, name: str) -> tuple[int, int, dict[str, Any]]:
        """``(trial id, number, params)`` of a candidate, read from the storage only when unknown."""
        if name not in self._ids:
            self.candidates()
        return self._ids[name]

    def _add_candidates(self, points: list[dict[str, Any]], round_: int, prefix: str = "r") -> list[str]:
        """Trials for new points, named by round and slot; adding them again (after a resume) adds nothing."""
        existing = self.candidates()
        names = []
        for slot, params in enumerate(points):
            name = f"{prefix}{round_}-{slot:02d}"
            if name not in existing:
                self.study.enqueue_trial(params, user_attrs={"name": name, "round": round_, "params": params})
            names.append(name)
        self._start_waiting()
        return names

    def _start_waiting(self) -> None:
        """Start every waiting trial, also one enqueued just before the search was killed."""
        for _ in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            self.study.ask(self.space.distributions()).set_user_attr("status", "alive")

    def _drop_failed(self, state: dict[str, Any]) -> None:
        """Forget candidates that failed: their failure is stored at once, the state only after the round,
        so a search killed in between must not bring them back."""
        trials = self.candidates()
        state["alive"] = [n for n in state["alive"] if trials[n].state != optuna.trial.TrialState.FAIL]

    def _set(self, name: str, key: str, value: Any) -> None:
        """An attribute of a running candidate's trial (a finished trial keeps what it had)."""
        trial_id, _, _ = self._trial(name)
        if name not in self._finished:
            optuna.trial.Trial(self.study, trial_id).set_user_attr(key, value)

    def _finish_trial(self, name: str, status: str, score: float | None) -> None:
        _, number, _ = self._trial(name)
        if name in self._finished:
            return
        self._set(name, "status", status)
        if status == "pruned":
            self.study.tell(number, state=optuna.trial.TrialState.PRUNED)
        elif status == "failed" or score is None or not math.isfinite(score):
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(number, score)
        self._finished.add(name)

    def candidate_config(self, name: str) -> RunConfig:
        return self.space.candidate_config(self.base, self._trial(name)[2])

    # ---- what it shows ---------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate: its point of the space, status, epoch, scores and validation metric
        (keys named after it: ``val_ppl`` and ``best_val_ppl`` for a language model)."""
        rows, key = [], f"val_{self.metric.name}"
        for name, trial in sorted(self.candidates().items()):
            attrs = trial.user_attrs
            values = {int(e): v for e, v in attrs.get(key, {}).items()}
            rows.append({"name": name, "params": attrs.get("params", {}), "status": attrs.get("status", "alive"),
                         "round": attrs.get("round"), "epoch": attrs.get("epoch", 0),
                         "scores": {int(e): v for e, v in attrs.get("scores", {}).items()},
                         key: values, f"best_{key}": self.metric.best(values.values()) if values else None,
                         "eliminated": attrs.get("eliminated"), "failed": attrs.get("failed"),
                         "retries": attrs.get("retries", {})})
        return rows

    def best_seen(self, rows: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """The best validation score any candidate showed, at any epoch: ``{name, epoch, value, status,
        eliminated}`` (``eliminated``: the epoch and rule that removed it, if they did)."""
        key, best = f"val_{self.metric.name}", None
        for row in rows if rows is not None else self.rows():
            for epoch, value in sorted(row[key].items()):
                if math.isfinite(value) and (best is None or self.metric.better(value, best["value"])):
                    best = {"name": row["name"], "epoch": epoch, "value": value, "status": row["status"],
                            "eliminated": row.get("eliminated")}
        return best

    def leaderboard(self, scores: dict[str, float] | None = None):
        return leaderboard(self.rows(), self.settings.sampler, self.settings.rank_by, self.metric.name, scores)

    def report(self) -> dict[str, Any]:
        """Where the search stands: candidates, winner and its test metrics, budget, overhead, time to target."""
        state = self.state
        rows = self.rows()
        budget = state["budget"]
        compute = state["compute_seconds"]
        ls_seconds = sum(bucket.get("ls_seconds", 0.0) for bucket in budget.values() if isinstance(bucket, dict))
        overhead = budget.get("overhead_seconds", 0.0)
        return {
            "settings": self.settings.model_dump(mode="json"),
            "space": self.space.model_dump(mode="json"),
            "phase": state["phase"],
            "metric": {"name": self.metric.name, "goal": self.metric.goal},
            "winner": state.get("winner"),
            "winner_config": self.candidate_config(state["winner"]).to_dict() if state.get("winner") else None,
            "best_seen": self.best_seen(rows),
            "reference": self._reference_summary(state),
            "test": state.get("test"),
            "test_seconds": state.get("test_seconds"),
            "candidates": rows,
            "budget": budget,
            "compute_seconds": compute,
            "search_overhead": {"ls_seconds": ls_seconds, "ranking_and_sampling_seconds": overhead,
                                "fraction": (ls_seconds + overhead) / compute if compute else 0.0},
            "time_to_target": state["time_to_target"],
            "reference_dir": str(self.reference_dir),
        }

    def _reference_summary(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The dense reference's validation metric per epoch and its best (None: no reference trained)."""
        curve = {int(e): v for e, v in state.get("reference", {}).items()}
        if not curve:
            return None
        return {f"val_{self.metric.name}": curve, f"best_val_{self.metric.name}": self.metric.best(curve.values()),
                "epochs": max(curve), "complete": max(curve) >= self.base.train.epochs}

    # ---- the work -------------------------------------------------------------------------------

    def _train(self, names: list[str], epoch: int, phase: str, state: dict[str, Any],
               reference: bool = False) -> dict[str, Progress]:
        """Bring candidates (and the reference) to ``epoch``; failures are marked and dropped."""
        ls = self.settings.ls_options() if phase != "final" else None
        owner = self._owner
        jobs = [Job(name, self.candidate_config(name).to_dict(), str(self.out / "candidates" / name), epoch, ls, owner)
                for name in names]
        if reference:
            jobs.insert(0, Job("reference", self._dense_config().to_dict(), str(self.reference_dir), epoch, ls, owner))
        results = {p.name: p for p in self.executor.run(jobs)}
        self._check_lease()  # a driver that lost its lease while the jobs ran writes nothing of them
        budget = state["budget"]
        for name, progress in results.items():
            bucket = budget.setdefault("reference" if name == "reference" else phase,
                                       {"epochs": 0, "train_seconds": 0.0, "ls_seconds": 0.0})
            started = state["compute_seconds"]
            reached = self._charge(name, progress, epoch, bucket, state)
            if name == "reference":
                if progress.failed:
                    raise ConfigError(f"the dense reference failed: {progress.failed}")
                state["reference"] = {str(e): v for e, v in progress.val_metric.items()}  # for the report
                continue
            if progress.attempts > 1:  # its job was started again: a worker died (Ray retried it) or a resume
                retries = dict(self.candidates()[name].user_attrs.get("retries", {}))
                retries[str(epoch)] = progress.attempts - 1
                self._set(name, "retries", retries)
                self.reporter.message(f"{name}: {progress.attempts} attempts to reach epoch {epoch}; continued from "
                                      "its checkpoint")
            if progress.failed:
                self.reporter.message(f"[red]{name} failed:[/] {progress.failed}")
                self._set(name, "failed", progress.failed)
                self._finish_trial(name, "failed", None)
                state["alive"] = [n for n in state["alive"] if n != name]
                continue
            self._set(name, "epoch", progress.epoch)
            self._set(name, f"val_{self.metric.name}", {str(e): v for e, v in progress.val_metric.items()})
            curve = state["time_to_target"]  # the best validation metric found so far, against compute spent
            for e, value in sorted(progress.val_metric.items()):  # each epoch at the compute spent when it ended
                if math.isfinite(value) and (not curve or self.metric.better(value, curve[-1][1])):
                    curve.append([reached.get(e, started), value])
        return results

    def _charge(self, name: str, progress: Progress, to_epoch: int, bucket: dict[str, Any],
                state: dict[str, Any]) -> dict[int, float]:
        """Add to ``bucket`` and the search's compute what the run's epochs up to ``to_epoch`` cost and this
        search has not been charged yet (its cost ledger says, whoever trained them: epochs trained
        before a kill are charged after the resume); returns the compute spent at the end of each epoch
        charged now."""
        charged = state.setdefault("charged", {}).setdefault(name, {"train": 0, "ls": -1})
        costs = progress.costs
        if not costs:  # no ledger (the job failed before it started): what the job said it spent
            bucket["epochs"] += progress.epochs_trained
            bucket["train_seconds"] += progress.train_seconds
            bucket["ls_seconds"] += progress.ls_seconds
            state["compute_seconds"] += progress.train_seconds + progress.ls_seconds
            return {}
        reached: dict[int, float] = {}
        owner = self._owner
        for epoch in range(to_epoch + 1):
            charged_now = False
            for kind in ("train", "ls"):
                if epoch > charged[kind] and epoch in costs.get(kind, {}):
                    seconds = costs[kind][epoch]
                    bucket[f"{kind}_seconds"] += seconds
                    bucket["epochs"] += kind == "train"
                    state["compute_seconds"] += seconds
                    charged[kind], charged_now = epoch, True
                    if costs.get(f"{kind}_by", {}).get(epoch, owner) != owner:
                        # a cached run (a reference another search trained) costs what it cost, so that
                        # a search's budget does not depend on which search ran first; it says so
                        bucket["reused_seconds"] = bucket.get("reused_seconds", 0.0) + seconds
            if charged_now:
                reached[epoch] = state["compute_seconds"]
        return reached

    def _scores(self, results: dict[str, Progress], names: list[str], epoch: int, round_: int,
                state: dict[str, Any]) -> dict[str, float]:
        """The ranking rule's scores of ``names`` at ``epoch`` (lower ranks first), each candidate's
        evidence (LS distance, validation loss) stored with it."""
        started = time.perf_counter()
        rule = RULES[self.settings.rank_by]
        losses = {name: results[name].val_loss[epoch] for name in names}
        distances = None
        if rule.needs_spectra:
            spectra = {name: results[name].spectra[self.settings.state] for name in names}
            distances, points = ls_distances(results["reference"].spectra[self.settings.state], spectra, epoch,
                                             self.settings.distance, self.settings.k)
            (self.out / "ls_space").mkdir(exist_ok=True)
            (self.out / "ls_space" / f"round-{round_}.json").write_text(json.dumps(points))
        scores = rule.score(Evidence(losses, distances))
        trials = self.candidates()
        for name, score in scores.items():
            attrs = trials[name].user_attrs
            for key, value in (("scores", score), ("val_losses", losses[name]),
                               *((("distances", distances[name]),) if distances is not None else ())):
                history = dict(attrs.get(key, {}))
                history[str(epoch)] = value
                self._set(name, key, history)
        state["budget"]["overhead_seconds"] = state["budget"].get("overhead_seconds", 0.0) + \
            time.perf_counter() - started
        return scores

    def run(self) -> dict[str, Any]:
        """Run (or continue) the search to its end, holding its lease; returns the report."""
        with Lease(self.storage, self.study_name, self.lease_seconds, where=str(self.out)) as lease:
            self._lease = lease
            try:
                return self._run()
            finally:
                self._lease = None
                if hasattr(self.executor, "close"):  # worker processes end with the search
                    self.executor.close()

    def _run(self) -> dict[str, Any]:
        state = self.state
        settings = self.settings
        if state["phase"] == "start" and settings.strategy == "hyperband":
            state["phase"] = "hyperband"
            self._save_state(state)
        if state["phase"] == "hyperband":
            self._hyperband(state)
        if state["phase"] == "start":
            if settings.sampler == "grid":
                points = self.space.grid()
            else:
                points = propose(settings.sampler, self.space, [], settings.n, _seed(settings.seed, 0))
            state["alive"] = self._add_candidates(points, 0)
            state["phase"] = "final" if settings.strategy == "full" else "rounds"
            self._save_state(state)
        while state["phase"] == "rounds":
            self._round(state)
        if state["phase"] == "final":
            self._final(state)
        return write_report(self.out, self.report())

    def _round(self, state: dict[str, Any]) -> None:
        settings, round_, epoch = self.settings, state["round"], state["epoch"]
        self._drop_failed(state)
        alive = list(state["alive"])
        self.reporter.message(f"round {round_}: {len(alive)} candidates to epoch {epoch}")
        results = self._train(alive, epoch, f"round {round_}", state,
                              reference=RULES[settings.rank_by].needs_spectra)
        alive = state["alive"]
        scores = self._scores(results, alive, epoch, round_, state)
        self.reporter.message(self.leaderboard(scores))
        count = len(alive) // 4 if settings.sampler != "grid" else 0  # insertions
        # the ranking that would leave no more than ``survivors`` decides them (another round would only
        # rank them again), as do the schedule's last ranking and top-K's first
        seen = self.best_seen()
        decision = decide(sorted(alive, key=lambda n: (scores[n], n)), settings.survivors, count,
                          epoch + settings.ei >= self.base.train.epochs, settings.strategy == "top_k",
                          protect=seen["name"] if settings.keep_best and seen else None)
        kept, eliminated = decision.kept, decision.eliminated
        if decision.final:
            for name in eliminated:
                self._eliminate(name, epoch, scores[name])
            state["alive"], state["phase"] = kept, "final"
            self._save_state(state)
            return
        for name in eliminated:
            self._eliminate(name, epoch, scores[name])
        inserted: list[str] = []
        if count:
            started = time.perf_counter()
            trials = self.candidates()
            archive = [(t.user_attrs["params"], t.user_attrs["scores"][max(t.user_attrs["scores"], key=int)])
                       for t in trials.values() if t.user_attrs.get("scores")]
            taken = [t.user_attrs["params"] for t in trials.values()]
            points = propose(settings.sampler, self.space, archive, count, _seed(settings.seed, round_ + 1), taken)
            inserted = self._add_candidates(points, round_ + 1)
            state["budget"]["overhead_seconds"] = state["budget"].get("overhead_seconds", 0.0) + \
                time.perf_counter() - started
        self.reporter.message(f"round {round_}: kept {', '.join(kept)}; eliminated {', '.join(eliminated)}"
                              + (f"; inserted {', '.join(inserted)}" if inserted else ""))
        state.update(alive=kept + inserted, round=round_ + 1, epoch=epoch + settings.ei)
        self._save_state(state)

    def _eliminate(self, name: str, epoch: int, score: float) -> None:
        """A candidate out of the search, with when and by which rule (the report says it)."""
        self._set(name, "eliminated", {"epoch": epoch, "rule": self.settings.rank_by})
        self._finish_trial(name, "eliminated", score)

    def _hyperband(self, state: dict[str, Any]) -> None:
        """Candidates one at a time, each reported to Optuna's Hyperband pruner after every epoch."""
        settings, horizon = self.settings, self.base.train.epochs
        pruner = optuna.pruners.HyperbandPruner(min_resource=settings.e0, max_resource=horizon, reduction_factor=2)
        study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=pruner)
        grid = self.space.grid() if settings.sampler == "grid" else None
        count = len(grid) if grid is not None else settings.n
        while True:
            self._start_waiting()  # a candidate enqueued just before a kill is the next one, as it was
            trials = self.candidates()
            running = sorted(n for n, t in trials.items() if t.state == optuna.trial.TrialState.RUNNING)
            if not running:
                if len(trials) >= count:
                    break
                if grid is not None:
                    points = [grid[len(trials)]]
                else:
                    archive = [(t.user_attrs["params"], t.value) for t in trials.values()
                               if t.state == optuna.trial.TrialState.COMPLETE]
                    pruned = [(t.user_attrs["params"], t.intermediate_values) for t in trials.values()
                              if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]
                    taken = [t.user_attrs["params"] for t in trials.values()]
                    points = propose(settings.sampler, self.space, archive, 1, _seed(settings.seed, "hb", len(trials)),
                                     taken, pruned)
                running = self._add_candidates(points, len(trials), prefix="hb")
            name = running[0]
            live = optuna.trial.Trial(study, self._trial(name)[0])
            state["alive"] = [name]
            for epoch in range(1, horizon + 1):
                progress = self._train([name], epoch, "hyperband", state)[name]
                if progress.failed:
                    break
                live.report(progress.val_loss[epoch], epoch)
                if epoch < horizon and live.should_prune():
                    self._finish_trial(name, "pruned", None)
                    break
            else:
                self._finish_trial(name, "complete", min(progress.val_loss.values()))
            self._save_state(state)
        complete = [n for n, t in self.candidates().items() if t.state == optuna.trial.TrialState.COMPLETE]
        state.update(alive=complete, phase="final")
        self._save_state(state)

    def _final(self, state: dict[str, Any]) -> None:
        horizon = self.base.train.epochs
        self._drop_failed(state)
        self.reporter.message(f"final: {', '.join(state['alive'])} to epoch {horizon}")
        results = self._train(list(state["alive"]), horizon, "final", state, reference=self.settings.dense_to_end)
        finished = {name: self.metric.best(results[name].val_metric.values())
                    for name in state["alive"] if name in results and results[name].val_metric}
        if not finished:
            raise ConfigError("every candidate failed; see report.json for the reasons")
        winner = min(finished, key=lambda n: (self.metric.order(finished[n]), n))
        if "test" not in state:  # measured once, for the winner only
            from sparsernn.runs import load_model
            from sparsernn.search.executor import corpus_for
            from sparsernn.tasks import build_task

            started = time.perf_counter()
            model, config, _, _ = load_model(self.out / "candidates" / winner)
            task = build_task(config, corpus_for(config))
            state["test"] = {"winner": winner, **{f"test_{k}": v for k, v in task.evaluate(model, "test").items()}}
            state["test_seconds"] = time.perf_counter() - started  # the search's result, not its overhead
        for name in state["alive"]:
            self._set(name, f"final_val_{self.metric.name}", finished.get(name))
            scores = self.candidates()[name].user_attrs.get("scores", {})
            # the trial's value (the study minimises): its last score, or its validation metric turned
            # so that lower is better (a full-training search has no scores)
            last = scores[max(scores, key=int)] if scores else \
                self.metric.order(finished[name]) if name in finished else math.inf
            self._finish_trial(name, "winner" if name == winner else "survivor", last)
        state.update(phase="done", winner=winner)
        self._save_state(state)
