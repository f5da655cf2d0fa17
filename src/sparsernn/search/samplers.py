"""Samplers that propose candidates from the archive of (configuration, score) pairs, by name.

Each sampler is registered in ``SAMPLERS`` (``sparsernn hyperprune --sampler NAME``); adding one is a
function and a registration. The Optuna ones are driven by ask-and-tell on a fresh in-memory study
holding the archive, seeded from the search's seed and the round: a proposal is a pure function of the
archive, so a resumed search proposes exactly what an uninterrupted one does. ``grid`` enumerates the
space and never inserts; ``random`` ignores the archive; ``tpe`` is Optuna's TPE; ``atpe`` is
hyperopt's adaptive TPE behind the same call (the optional ``atpe`` extra).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from sparsernn.errors import ConfigError
from sparsernn.registry import Registry
from sparsernn.search.space import SearchSpace, point_key

optuna.logging.set_verbosity(logging.WARNING)

Archive = list[tuple[dict[str, Any], float]]
Pruned = list[tuple[dict[str, Any], dict[int, float]]]  # (configuration, the values it reported by epoch)
Points = list[dict[str, Any]]


@dataclass(frozen=True)
class Sampler:
    name: str
    description: str
    # (space, archive, count, seed, taken, pruned) -> count new points
    propose: Callable[[SearchSpace, Archive, int, int, Points, Pruned], Points]
    enumerates: bool = False  # the candidates are the whole grid of the space, and it never inserts


SAMPLERS: Registry[Sampler] = Registry("sampler")


def propose(sampler: str, space: SearchSpace, archive: Archive, count: int, seed: int,
            taken: Points | None = None, pruned: Pruned | None = None) -> Points:
    """``count`` new points of ``space`` (none for ``grid``), avoiding the points in ``taken`` when the
    space leaves room; lower archive scores are better. ``pruned``: trials a pruner stopped, with the
    values they reported; TPE ranks them below every finished trial, later-stopped ones higher, as
    Optuna's own TPE does under a pruner (ATPE does not read them)."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler: expected one of {', '.join(SAMPLERS.names())}, got {sampler!r}")
    entry = SAMPLERS[sampler]
    if entry.enumerates or count <= 0:
        return []
    return entry.propose(space, archive, count, seed, taken or [], pruned or [])


def optuna_proposals(make: Callable[[int, Archive], optuna.samplers.BaseSampler], space: SearchSpace,
                     archive: Archive, count: int, seed: int, taken: Points, pruned: Pruned) -> Points:
    """Proposals of the Optuna sampler ``make(seed, archive)`` returns, told the archive and the pruned."""
    distributions = space.distributions()
    if not distributions:
        return []
    study = optuna.create_study(direction="minimize", sampler=make(seed, archive))
    for params, score in archive:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=score))
    for params, reported in pruned:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  state=optuna.trial.TrialState.PRUNED,
                                                  intermediate_values=dict(reported)))
    def key(params: dict[str, Any]) -> tuple:  # what a point trains: settings its method ignores left out
        return point_key(space.effective(params))

    seen = {key(p) for p in taken}
    worst = max((score for _, score in archive), default=0.0)
    proposals: Points = []
    for _ in range(count):
        for _attempt in range(20):  # a small categorical space may repeat itself; skip repeats when it can
            trial = study.ask(distributions)
            study.tell(trial, worst)  # a pending proposal counts as poor, so the next one looks elsewhere
            if key(trial.params) not in seen:
                break
        seen.add(key(trial.params))
        proposals.append(dict(trial.params))
    return proposals


def _random(seed: int, archive: Archive) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(seed: int, archive: Archive) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, len(archive) // 2)))


def _atpe(space: SearchSpace, archive: Archive, count: int, seed: int, taken: Points, pruned: Pruned) -> Points:
    from sparsernn.search.atpe import propose_atpe  # the optional extra, imported only when used

    return propose_atpe(space, archive, count, seed, taken)


def _optuna(make: Callable[[int, Archive], optuna.samplers.BaseSampler]):
    def proposals(space: SearchSpace, archive: Archive, count: int, seed: int, taken: Points,
                  pruned: Pruned) -> Points:
        return optuna_proposals(make, space, archive, count, seed, taken, pruned)

    return proposals


SAMPLERS.register(Sampler("grid", "every point of the space's grid, trained at once; never inserts",
                          lambda *args: [], enumerates=True))
SAMPLERS.register(Sampler("random", "uniform over the space, ignoring the archive", _optuna(_random)))
SAMPLERS.register(Sampler("tpe", "Optuna's tree-structured Parzen estimator on the archive", _optuna(_tpe)))
SAMPLERS.register(Sampler("atpe", "hyperopt's adaptive TPE (the atpe extra)", _atpe))
