"""The steps strategies share: the initial candidates, training candidates to an epoch (charged to the
ledger, stored with each candidate), and the final every search ends with."""

from __future__ import annotations

import math
import time
from typing import Any

from sparsernn.errors import ConfigError
from sparsernn.search.executor import Job, Progress
from sparsernn.search.samplers import SAMPLERS, propose
from sparsernn.search.strategies._base import Strategy
from sparsernn.search.study import seed_for


def start(strategy: Strategy, state: dict[str, Any], then: str) -> None:
    """The initial candidates (the grid, or ``n`` proposed from an empty archive), then phase ``then``."""
    store, settings = strategy.store, strategy.settings
    if SAMPLERS[settings.sampler].enumerates:
        points = store.space.grid()
    else:
        points = propose(settings.sampler, store.space, [], settings.n, seed_for(settings.seed, 0))
    state["alive"] = store.add(points, 0)
    state["phase"] = then
    store.save_state(state)


def train(strategy: Strategy, names: list[str], epoch: int, phase: str, state: dict[str, Any],
          reference: bool = False) -> dict[str, Progress]:
    """Bring candidates (and the reference) to ``epoch``, charging ``phase``; failures are marked and dropped."""
    store, ledger = strategy.store, strategy.ledger
    ls = strategy.settings.ls_options() if phase != "final" else None
    owner = ledger.owner
    jobs = [candidate_job(store, name, epoch, ls, owner) for name in names]
    if reference:
        jobs.insert(0, Job("reference", store.reference_config().to_dict(), str(store.reference_dir), epoch, ls,
                           owner))
    results = {p.name: p for p in strategy.executor.run(jobs)}
    store.check_lease()  # a driver that lost its lease while the jobs ran writes nothing of them
    for name, progress in results.items():
        bucket = ledger.bucket(state, "reference" if name == "reference" else phase)
        started = state["compute_seconds"]
        reached = ledger.charge(name, progress, epoch, bucket, state)
        if name == "reference":
            if progress.failed:
                raise ConfigError(f"the dense reference failed: {progress.failed}")
            state["reference"] = {str(e): v for e, v in progress.val_metric.items()}  # for the report
            continue
        if not _store_progress(strategy, name, progress, epoch, state):
            continue
        ledger.track_target(state, progress.val_metric, reached, started, store.metric.better)
    return results


def candidate_job(store, name: str, epoch: int, ls, owner: str) -> Job:
    """The job that brings candidate ``name`` to ``epoch``: its run config, run directory and point."""
    return Job(name, store.candidate_config(name).to_dict(), str(store.out / "candidates" / name), epoch, ls, owner,
               store.point(name))


def _store_progress(strategy: Strategy, name: str, progress: Progress, epoch: int, state: dict[str, Any]) -> bool:
    """What a candidate's job reached (retries, epoch, validation metric); False when it failed (it is
    marked failed and leaves ``state["alive"]``)."""
    store = strategy.store
    if progress.attempts > 1:  # its job was started again: a worker died (Ray retried it) or a resume
        retries = dict(store.candidates()[name].user_attrs.get("retries", {}))
        retries[str(epoch)] = progress.attempts - 1
        store.set(name, "retries", retries)
        strategy.reporter.message(f"{name}: {progress.attempts} attempts to reach epoch {epoch}; continued from "
                                  "its checkpoint")
    if progress.failed:
        strategy.reporter.message(f"[red]{name} failed:[/] {progress.failed}")
        store.set(name, "failed", progress.failed)
        store.finish(name, "failed", None)
        state["alive"] = [n for n in state["alive"] if n != name]
        return False
    store.set(name, "epoch", progress.epoch)
    store.set(name, f"val_{store.metric.name}", {str(e): v for e, v in progress.val_metric.items()})
    return True


def final(strategy: Strategy, state: dict[str, Any]) -> None:
    """The candidates alive train to the end of the schedule; the best by the task's validation metric
    wins, and its test metrics are measured once."""
    store = strategy.store
    metric, horizon = store.metric, store.base.train.epochs
    store.drop_failed(state)
    strategy.reporter.message(f"final: {', '.join(state['alive'])} to epoch {horizon}")
    results = train(strategy, list(state["alive"]), horizon, "final", state, reference=strategy.settings.dense_to_end)
    finished = {name: metric.best(results[name].val_metric.values())
                for name in state["alive"] if name in results and results[name].val_metric}
    if not finished:
        raise ConfigError("every candidate failed; see report.json for the reasons")
    winner = min(finished, key=lambda n: (metric.order(finished[n]), n))
    if "test" not in state:  # measured once, for the winner only
        started = time.perf_counter()
        state["test"] = {"winner": winner, **{f"test_{k}": v for k, v in _test_metrics(strategy, winner).items()}}
        state["test_seconds"] = time.perf_counter() - started  # the search's result, not its overhead
    for name in state["alive"]:
        store.set(name, f"final_val_{metric.name}", finished.get(name))
        scores = store.candidates()[name].user_attrs.get("scores", {})
        # the trial's value (the study minimises): its last score, or its validation metric turned
        # so that lower is better (a full-training search has no scores)
        last = scores[max(scores, key=int)] if scores else \
            metric.order(finished[name]) if name in finished else math.inf
        store.finish(name, "winner" if name == winner else "survivor", last)
    state.update(phase="done", winner=winner)
    store.save_state(state)


def _test_metrics(strategy: Strategy, winner: str) -> dict[str, float]:
    """The winner's test metrics, measured by what trained it: the executor's ``test_metrics`` (a user's
    objective keeps its models itself), else the toolkit's run directory it left."""
    from sparsernn.search.executor import run_test_metrics

    store = strategy.store
    job = candidate_job(store, winner, store.base.train.epochs, None, strategy.ledger.owner)
    return getattr(strategy.executor, "test_metrics", run_test_metrics)(job)
