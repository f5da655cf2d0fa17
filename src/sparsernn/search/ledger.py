"""The search's cost ledger: what every phase spent, kept in the search's state.

What a search spent is read from each run's cost ledger (``costs.json``: seconds per epoch of training
and validation, per spectrum, and which search paid): every epoch a search uses is charged once, to the
phase that used it (a round, ``final``, ``hyperband``, or the dense ``reference``), including epochs
trained before a kill and the epochs of a cached reference another search trained
(``reused_seconds`` in the reference's budget), so that a budget does not depend on interruptions or on
which search ran first. Time-to-target points fall at the compute spent when the epoch that reached
them ended. Ranking and sampling are charged as overhead.

The numbers live in the state the store saves (``budget``, ``compute_seconds``, ``charged``,
``time_to_target``), so they resume with it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sparsernn.search.executor import Progress


def new_budget() -> dict[str, Any]:
    """The ledger's part of a new search's state."""
    return {"budget": {}, "time_to_target": [], "compute_seconds": 0.0}


class Ledger:
    """Charges the work of the search whose runs' ledgers name it ``owner``, in its ``state``."""

    def __init__(self, owner: str) -> None:
        self.owner = owner

    @staticmethod
    def bucket(state: dict[str, Any], phase: str) -> dict[str, Any]:
        """What ``phase`` spent so far (created empty)."""
        return state["budget"].setdefault(phase, {"epochs": 0, "train_seconds": 0.0, "ls_seconds": 0.0})

    def charge(self, name: str, progress: Progress, to_epoch: int, bucket: dict[str, Any],
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
        owner = self.owner
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

    @staticmethod
    def track_target(state: dict[str, Any], val_metric: dict[int, float], reached: dict[int, float],
                     started: float, better: Any) -> None:
        """The best validation metric found so far, against compute spent: each epoch of ``val_metric``
        at the compute spent when it ended (``reached``; ``started`` for epochs charged before)."""
        curve = state["time_to_target"]
        for e, value in sorted(val_metric.items()):
            if math.isfinite(value) and (not curve or better(value, curve[-1][1])):
                curve.append([reached.get(e, started), value])

    @staticmethod
    @contextmanager
    def overhead(state: dict[str, Any]) -> Iterator[None]:
        """Charge the time the block takes (ranking, sampling) as the search's overhead."""
        started = time.perf_counter()
        yield
        state["budget"]["overhead_seconds"] = state["budget"].get("overhead_seconds", 0.0) + \
            time.perf_counter() - started

    @staticmethod
    def summary(state: dict[str, Any]) -> dict[str, float]:
        """The search's overhead: spectra, ranking and sampling, and their fraction of the compute."""
        budget, compute = state["budget"], state["compute_seconds"]
        ls_seconds = sum(bucket.get("ls_seconds", 0.0) for bucket in budget.values() if isinstance(bucket, dict))
        overhead = budget.get("overhead_seconds", 0.0)
        return {"ls_seconds": ls_seconds, "ranking_and_sampling_seconds": overhead,
                "fraction": (ls_seconds + overhead) / compute if compute else 0.0}
