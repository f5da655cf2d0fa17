"""``sparsernn.hyperprune``: the toolkit's hyperpruning search over a user's own training loop.

It is the same ``Search`` as ``sparsernn hyperprune`` (strategies, ranking rules, samplers, Optuna
storage, lease, ledger, report), driven by an ``ObjectiveExecutor`` that calls the user's objective
instead of the toolkit's ``Trainer`` (the contract is in ``search/objective.py``). What the toolkit's
search takes from its run config, a user search states directly: the schedule's length (``epochs``)
and what candidates are compared by (the objective's score, with its ``direction``). Everything is
kept in ``out``: a rerun with the same ``out`` and the same arguments continues the search where it
stopped (finished candidates are not called again; a candidate's recorded epochs are not retrained).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from sparsernn.config import validate
from sparsernn.errors import ConfigError
from sparsernn.progress import Reporter
from sparsernn.search.driver import Search
from sparsernn.search.objective import Candidate, Objective, ObjectiveExecutor, Result, short_params
from sparsernn.search.settings import SearchSettings
from sparsernn.search.space import SearchSpace
from sparsernn.search.storage import DB
from sparsernn.search.study import CandidateStore
from sparsernn.tasks.base import Metric
from sparsernn.validation import validation_line

SCORE = "score"  # the metric's name in the report: rows carry ``val_score`` and ``best_val_score``


@dataclass
class HyperpruneResult:
    """What a user's hyperpruning search found (``report`` is ``out/report.json``'s content)."""

    winner: str | None
    params: dict[str, Any]  # the winner's point of the space, short names (sparsify's keywords)
    score: float | None  # the winner's best validation score
    best_seen: dict[str, Any] | None  # the best score any candidate showed: {name, epoch, value, status, eliminated}
    candidates: list[dict[str, Any]]  # one row per candidate: params, status, epoch, ranking scores, val_score
    model: nn.Module | None  # the winner's model as last returned in this process (None after a restart)
    directory: Path | None  # the winner's own directory (where the objective checkpointed it)
    report: dict[str, Any]


class ObjectiveSearch(Search):
    """A ``Search`` whose candidates are a user's objective's: its report names the winner's point of
    the space (the objective's settings), not a toolkit run config."""

    def report(self) -> dict[str, Any]:
        report = super().report()
        winner = report.get("winner")
        report["winner_config"] = short_params(self.store.point(winner)) if winner else None
        return report


def hyperprune(objective: Objective, space: SearchSpace | dict[str, Any], *, epochs: int, inputs: Any = None,
               reference: Objective | None = None, n: int = 8, e0: int = 2, ei: int = 1, survivors: int = 2,
               rank_by: str = "ls_band", sampler: str = "tpe", strategy: str = "lsh", out: str | Path | None = None,
               direction: str = "minimize", test: Callable[[nn.Module], dict[str, float]] | None = None,
               storage: str | None = None, reporter: Reporter | None = None, **settings: Any) -> HyperpruneResult:
    """Hyperprune a user's training loop: ``n`` candidates sampled from ``space`` (a ``SearchSpace`` or
    its dict: ``density``, ``choices``, ``ranges``, ``fixed`` over sparsify's settings, and ``user.NAME``
    keys for the objective's own hyperparameters, read as ``candidate.user["NAME"]``) train through
    ``objective(candidate, epoch) -> (model, score)``; rounds rank them (``rank_by``: LS distance of the
    model's spectrum on ``inputs`` to the dense reference's, validation score, ...), eliminate, insert
    (``sampler``) and train the ``survivors`` to ``epochs``; the best by score wins.

    ``reference``: the dense reference's objective (default: ``objective`` with ``candidate.dense``);
    ``direction``: ``"minimize"`` (a validation loss) or ``"maximize"``; ``test(model)``: the winner's
    test metrics; ``settings``: the other ``SearchSettings`` (``k``, ``state``, ``distance``,
    ``keep_best``, ``dense_to_end``, ``seed``). ``out``: the search's directory (None: a temporary
    one, no resume); rerun with the same ``out`` and arguments to continue a stopped search.
    """
    chosen = _settings(n=n, e0=e0, ei=ei, survivors=survivors, rank_by=rank_by, sampler=sampler, strategy=strategy,
                       **{"dense_to_end": False, **settings})
    space = _space(space)
    base = validate({"train": {"epochs": epochs, "device": "cpu"}}, "hyperprune")
    metric = Metric(SCORE, "min" if direction == "minimize" else "max")
    executor = ObjectiveExecutor(objective, inputs, reference, direction, test)
    where = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="hyperprune-"))
    if _stored(where, storage):
        search = ObjectiveSearch(where, storage=storage, executor=executor, reporter=reporter)
        _same_definition(search, space, chosen, epochs, metric)
    else:
        search = ObjectiveSearch(where, space, base, chosen, storage=storage, reference_dir=where / "reference",
                                 executor=executor, reporter=reporter, metric=metric)
    return _result(search, _run(search), executor)


def _run(search: Search) -> dict[str, Any]:
    """The search run to its end; when every candidate failed, the first one's reason, in one line (a bug
    in the objective fails every candidate alike)."""
    try:
        return search.run()
    except ConfigError as exc:
        failed = [row for row in search.rows() if row.get("failed")] if "every candidate failed" in str(exc) else []
        if not failed:
            raise
        raise ConfigError(f"every candidate failed; {failed[0]['name']}: {failed[0]['failed']}") from None


def _settings(**given: Any) -> SearchSettings:
    """The search's settings, one in-process worker (the objective runs here); errors in one line."""
    try:
        return SearchSettings(**{**given, "workers": 1})
    except ValidationError as exc:
        raise ConfigError(f"hyperprune: {validation_line(exc, given='never')}") from None


def _space(space: SearchSpace | dict[str, Any]) -> SearchSpace:
    if isinstance(space, SearchSpace):
        return space
    try:
        return SearchSpace.model_validate(space)
    except ValidationError as exc:
        raise ConfigError(f"hyperprune space: {validation_line(exc, unknown='unknown key', given='never')}") from None


def _stored(out: Path, storage: str | None) -> bool:
    """A search whose start completed is stored for ``out`` (then a rerun continues it)."""
    if storage is None and not (out / DB).is_file():
        return False
    try:
        return "settings" in CandidateStore(out, storage, create=False).attrs
    except ConfigError:
        return False


def _same_definition(search: Search, space: SearchSpace, settings: SearchSettings, epochs: int,
                     metric: Metric) -> None:
    """A rerun continues the stored search only when it asks for the same search."""
    stored, asked = search.settings.model_dump(mode="json"), settings.model_dump(mode="json")
    differ = sorted(key for key in asked if stored.get(key) != asked[key])
    if search.space != space:
        differ.append("space")
    if search.base.train.epochs != epochs:
        differ.append("epochs")
    if search.store.metric != metric:
        differ.append("direction")
    if differ:
        raise ConfigError(f"{search.out}: holds another hyperprune search (it differs in {', '.join(differ)}); "
                          "rerun with its arguments to continue it, or give another out=")


def _result(search: Search, report: dict[str, Any], executor: ObjectiveExecutor) -> HyperpruneResult:
    winner = report.get("winner")
    row = next((r for r in report["candidates"] if r["name"] == winner), None)
    return HyperpruneResult(winner, report.get("winner_config") or {}, row[f"best_val_{SCORE}"] if row else None,
                            report.get("best_seen"), report["candidates"], executor.models.get(winner or ""),
                            search.out / "candidates" / winner if winner else None, report)


__all__ = ["Candidate", "HyperpruneResult", "Result", "hyperprune"]
