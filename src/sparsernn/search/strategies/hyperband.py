"""Hyperband: the multi-fidelity search a practitioner reaches for first. ``n`` candidates are proposed
one at a time (from the archive of finished and pruned ones), each trained epoch by epoch and stopped by
Optuna's Hyperband pruner on validation loss (brackets from ``e0`` epochs to the full schedule,
halving); those that complete go to the final."""

from __future__ import annotations

from typing import Any

import optuna

from sparsernn.search.samplers import SAMPLERS, propose
from sparsernn.search.strategies._base import STRATEGIES, Strategy
from sparsernn.search.strategies._steps import train
from sparsernn.search.study import seed_for

TrialState = optuna.trial.TrialState


@STRATEGIES.register
class Hyperband(Strategy):
    name = "hyperband"
    description = "Optuna's Hyperband pruner on validation loss, candidates one at a time"

    def run(self, state: dict[str, Any]) -> None:
        """Candidates one at a time, each reported to Optuna's Hyperband pruner after every epoch."""
        store, settings, horizon = self.store, self.settings, self.store.base.train.epochs
        if state["phase"] == "start":
            state["phase"] = "hyperband"
            store.save_state(state)
        pruner = optuna.pruners.HyperbandPruner(min_resource=settings.e0, max_resource=horizon, reduction_factor=2)
        study = optuna.load_study(study_name=store.study_name, storage=store.url, pruner=pruner)
        grid = store.space.grid() if SAMPLERS[settings.sampler].enumerates else None
        count = len(grid) if grid is not None else settings.n
        while True:
            store.start_waiting()  # a candidate enqueued just before a kill is the next one, as it was
            trials = store.candidates()
            running = sorted(n for n, t in trials.items() if t.state == TrialState.RUNNING)
            if not running:
                if len(trials) >= count:
                    break
                points = [grid[len(trials)]] if grid is not None else self.propose(trials)
                running = store.add(points, len(trials), prefix="hb")
            self.train_one(running[0], optuna.trial.Trial(study, store.trial(running[0])[0]), state)
            store.save_state(state)
        complete = [n for n, t in store.candidates().items() if t.state == TrialState.COMPLETE]
        state.update(alive=complete, phase="final")
        store.save_state(state)

    def propose(self, trials: dict[str, optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
        """The next candidate, from the finished trials' best losses and what the pruned ones reported."""
        settings = self.settings
        archive = [(t.user_attrs["params"], t.value) for t in trials.values() if t.state == TrialState.COMPLETE]
        pruned = [(t.user_attrs["params"], t.intermediate_values) for t in trials.values()
                  if t.state == TrialState.PRUNED and t.intermediate_values]
        taken = [t.user_attrs["params"] for t in trials.values()]
        return propose(settings.sampler, self.store.space, archive, 1, seed_for(settings.seed, "hb", len(trials)),
                       taken, pruned)

    def train_one(self, name: str, live: optuna.trial.Trial, state: dict[str, Any]) -> None:
        """A candidate epoch by epoch to the end, unless it fails or the pruner stops it."""
        horizon = self.store.base.train.epochs
        state["alive"] = [name]
        for epoch in range(1, horizon + 1):
            progress = train(self, [name], epoch, "hyperband", state)[name]
            if progress.failed:
                return
            live.report(progress.val_loss[epoch], epoch)
            if epoch < horizon and live.should_prune():
                self.store.finish(name, "pruned", None)
                return
        self.store.finish(name, "complete", min(progress.val_loss.values()))
