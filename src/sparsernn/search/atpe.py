"""Adaptive TPE (hyperopt's ATPE) behind the samplers' one call: the archive becomes hyperopt trials,
ATPE suggests, and a pending suggestion counts as poor (like the Optuna samplers' constant liar).
Needs the ``atpe`` extra (hyperopt and lightgbm)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sparsernn.errors import ConfigError
from sparsernn.search.space import SearchSpace


_EPOCH = datetime(2000, 1, 1)


def _hyperopt():
    try:
        import hyperopt
        from hyperopt import atpe
    except ImportError:
        raise ConfigError("sampler atpe needs hyperopt and lightgbm: pip install 'sparsernn[atpe]'") from None
    return hyperopt, atpe


def propose_atpe(space: SearchSpace, archive: list[tuple[dict[str, Any], float]], count: int, seed: int,
                 taken: list[dict[str, Any]]) -> list[dict[str, Any]]:
    hyperopt, atpe = _hyperopt()
    import numpy as np
    from hyperopt import hp

    hp_space: dict[str, Any] = {key: hp.choice(key, options) for key, options in space.choices.items()}
    for key, bounds in space.ranges.items():
        if bounds.log:
            hp_space[key] = hp.loguniform(key, math.log(bounds.low), math.log(bounds.high))
        elif bounds.integer:
            hp_space[key] = hp.quniform(key, bounds.low, bounds.high, 1)
        else:
            hp_space[key] = hp.uniform(key, bounds.low, bounds.high)
    domain = hyperopt.Domain(lambda params: 0.0, hp_space)
    trials = hyperopt.Trials()

    def record(params: dict[str, Any], score: float) -> None:
        tid = trials.new_trial_ids(1)[0]
        vals = {key: [space.choices[key].index(value)] if key in space.choices else [value]
                for key, value in params.items() if key in hp_space}
        misc = {"tid": tid, "cmd": domain.cmd, "workdir": None, "idxs": {key: [tid] for key in vals}, "vals": vals}
        (doc,) = trials.new_trial_docs([tid], [None], [{"loss": score, "status": "ok"}], [misc])
        doc["state"] = hyperopt.JOB_STATE_DONE
        doc["book_time"] = doc["refresh_time"] = _EPOCH  # ATPE reads durations; fixed ones keep it deterministic
        trials.insert_trial_docs([doc])
        trials.refresh()

    for params, score in archive:
        record(params, score)
    # ATPE draws from the global numpy and Python generators too: seed them for this call, then put back
    import random

    saved = np.random.get_state(), random.getstate()
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        return _suggest(space, archive, count, seed, taken, atpe, domain, trials, record)
    finally:
        np.random.set_state(saved[0])
        random.setstate(saved[1])


def _suggest(space, archive, count, seed, taken, atpe, domain, trials, record) -> list[dict[str, Any]]:
    import numpy as np

    worst = max((score for _, score in archive), default=0.0)
    seen = {tuple(sorted((k, repr(v)) for k, v in p.items())) for p in taken}
    rng = np.random.default_rng(seed)
    proposals = []
    for _ in range(count):
        for _attempt in range(20):
            (doc,) = atpe.suggest(trials.new_trial_ids(1), domain, trials, int(rng.integers(2**31 - 1)))
            vals = {key: value[0] for key, value in doc["misc"]["vals"].items() if value}
            params = {key: (space.choices[key][int(v)] if key in space.choices else
                            (int(v) if space.ranges[key].integer else float(v))) for key, v in vals.items()}
            key = tuple(sorted((k, repr(v)) for k, v in params.items()))
            if key not in seen:
                break
        seen.add(key)
        record(params, worst)
        proposals.append(params)
    return proposals
