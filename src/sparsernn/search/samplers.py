"""Samplers that propose candidates from the archive of (configuration, score) pairs.

All are Optuna samplers driven by ask-and-tell on a fresh in-memory study holding the archive, seeded
from the search's seed and the round: a proposal is a pure function of the archive, so a resumed
search proposes exactly what an uninterrupted one does. ``grid`` enumerates the space and never
inserts; ``random`` ignores the archive; ``tpe`` is Optuna's TPE; ``atpe`` is hyperopt's adaptive TPE
behind the same call (the optional ``atpe`` extra).
"""

from __future__ import annotations

import logging
from typing import Any

import optuna

from sparsernn.errors import ConfigError
from sparsernn.search.space import SearchSpace, point_key

SAMPLERS = ("grid", "random", "tpe", "atpe")

optuna.logging.set_verbosity(logging.WARNING)

Archive = list[tuple[dict[str, Any], float]]
Pruned = list[tuple[dict[str, Any], dict[int, float]]]  # (configuration, the values it reported by epoch)


def propose(sampler: str, space: SearchSpace, archive: Archive, count: int, seed: int,
            taken: list[dict[str, Any]] | None = None, pruned: Pruned | None = None) -> list[dict[str, Any]]:
    """``count`` new points of ``space`` (none for ``grid``), avoiding the points in ``taken`` when the
    space leaves room; lower archive scores are better. ``pruned``: trials a pruner stopped, with the
    values they reported; TPE ranks them below every finished trial, later-stopped ones higher, as
    Optuna's own TPE does under a pruner (ATPE does not read them)."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "grid" or count <= 0:
        return []
    if sampler == "atpe":
        from sparsernn.search.atpe import propose_atpe

        return propose_atpe(space, archive, count, seed, taken or [])
    distributions = space.distributions()
    if not distributions:
        return []
    if sampler == "random":
        optuna_sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        optuna_sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, len(archive) // 2)))
    study = optuna.create_study(direction="minimize", sampler=optuna_sampler)
    for params, score in archive:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=score))
    for params, reported in pruned or []:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  state=optuna.trial.TrialState.PRUNED,
                                                  intermediate_values=dict(reported)))
    def key(params: dict[str, Any]) -> tuple:  # what a point trains: settings its method ignores left out
        return point_key(space.effective(params))

    seen = {key(p) for p in taken or []}
    worst = max((score for _, score in archive), default=0.0)
    proposals: list[dict[str, Any]] = []
    for _ in range(count):
        for _attempt in range(20):  # a small categorical space may repeat itself; skip repeats when it can
            trial = study.ask(distributions)
            study.tell(trial, worst)  # a pending proposal counts as poor, so the next one looks elsewhere
            if key(trial.params) not in seen:
                break
        seen.add(key(trial.params))
        proposals.append(dict(trial.params))
    return proposals
