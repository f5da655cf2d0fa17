"""Sparse-training methods as presets of modes, and the factory the Trainer calls.

``--method`` picks a row of ``METHOD_DEFAULTS``; any mode given explicitly overrides it. The resolved
values are written back into the run config, so ``config.yaml`` says exactly what ran.

| method  | init    | death            | growth   | redistribution | death rate        | updates        |
|---------|---------|------------------|----------|----------------|-------------------|----------------|
| static  | uniform | -                | -        | -              | -                 | never          |
| set     | er      | set              | random   | none           | 0.3 constant      | every epoch    |
| rigl    | er      | magnitude        | gradient | none           | 0.3 -> 0 (cosine) | 100 steps, 75% |
| snfs    | uniform | magnitude        | momentum | momentum       | 0.5 -> 0.005      | every epoch    |
| dsr     | uniform | global_magnitude | random   | nonzeros       | 0.5 -> 0.005      | every epoch    |
| selfish | uniform | magnitude        | random   | none           | 0.5 -> 0.005      | every epoch    |
| gmp     | uniform | magnitude (cubic schedule, dense -> density)  | -                 | 100 steps      |
| iss     | group Lasso over ISS components + zeroing below a threshold (no density target)   |
| l1      | L1 over the same weights + zeroing below a threshold                              |

Selfish-RNN also trains with SNT-ASGD: ``optim.name`` becomes ``nt_asgd`` when it is plain ``sgd``;
averaging then runs over non-zero weights only, because masking zeroes the averaging state too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sparsernn.sparsity.base import Dense, Sparsifier

if TYPE_CHECKING:
    from sparsernn.config import RunConfig

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "dense": {},
    "static": {"init": "uniform"},
    "set": {"init": "er", "death": "set", "growth": "random", "redistribution": "none", "death_rate": 0.3,
            "death_rate_min": 0.3, "update_every": "epoch"},
    "rigl": {"init": "er", "death": "magnitude", "growth": "gradient", "redistribution": "none",
             "death_rate": 0.3, "death_rate_min": 0.0, "update_every": 100, "stop_fraction": 0.75},
    "snfs": {"init": "uniform", "death": "magnitude", "growth": "momentum", "redistribution": "momentum",
             "death_rate": 0.5, "death_rate_min": 0.005, "update_every": "epoch"},
    "dsr": {"init": "uniform", "death": "global_magnitude", "growth": "random", "redistribution": "nonzeros",
            "death_rate": 0.5, "death_rate_min": 0.005, "update_every": "epoch"},
    "selfish": {"init": "uniform", "death": "magnitude", "growth": "random", "redistribution": "none",
                "death_rate": 0.5, "death_rate_min": 0.005, "update_every": "epoch"},
    "gmp": {"init": "uniform", "update_every": 100, "start_fraction": 0.0, "end_fraction": 0.75},
    "iss": {},
    "l1": {},
}
DYNAMIC_FIELDS = ("death", "growth", "redistribution", "death_rate", "death_rate_min", "update_every", "stop_epoch")


def resolve_method(config: RunConfig) -> None:
    """Fill unset sparsity fields from the method's defaults; reject settings the method cannot use."""
    s = config.sparsity
    defaults = METHOD_DEFAULTS[s.method]
    epochs = config.train.epochs
    if s.method == "dense":
        if s.density != 1.0:
            raise ValueError("sparsity.density < 1 needs a sparse method (sparsity.method)")
        return
    if s.method in ("iss", "l1"):
        if s.density != 1.0:
            raise ValueError(f"sparsity.method {s.method} learns its sparsity: set lasso_lambda, not density")
        if s.method == "iss" and config.model.tie_weights:
            raise ValueError("sparsity.method iss needs model.tie_weights off (decoder columns would be embedding columns)")
        if s.lasso_lambda is None:
            raise ValueError(f"sparsity.method {s.method} needs sparsity.lasso_lambda (e.g. --lasso-lambda 0.001)")
        return
    if s.density == 1.0 and s.method != "dense":
        raise ValueError(f"sparsity.method {s.method} needs sparsity.density < 1 (e.g. --density 0.33)")
    for field in ("init", *DYNAMIC_FIELDS):
        if getattr(s, field) is None and field in defaults:
            setattr(s, field, defaults[field])
    if s.method in ("set", "rigl", "snfs", "dsr", "selfish") and s.stop_epoch is None:
        s.stop_epoch = max(1, math.ceil(defaults.get("stop_fraction", 1.0) * epochs))
    if s.method == "gmp":
        if s.start_epoch is None:
            s.start_epoch = 1 + math.floor(defaults["start_fraction"] * epochs)
        if s.end_epoch is None:
            s.end_epoch = max(s.start_epoch, math.ceil(defaults["end_fraction"] * epochs))
        if s.end_epoch < s.start_epoch:
            raise ValueError(f"sparsity.end_epoch ({s.end_epoch}) is before start_epoch ({s.start_epoch})")
        if s.update_every == "epoch":
            raise ValueError("sparsity.update_every: gmp prunes every N steps; give a number")
    if s.method == "selfish" and config.optim.name == "sgd":
        config.optim.name = "nt_asgd"


def build_sparsifier(config: RunConfig, steps_per_epoch: int) -> Sparsifier:
    """The Sparsifier for a resolved run config (the only place that knows the methods)."""
    from sparsernn.sparsity.dst import DynamicSparsity
    from sparsernn.sparsity.gmp import GradualMagnitudePruning

    s = config.sparsity
    if s.method == "dense":
        return Dense()
    if s.method in ("iss", "l1"):
        from sparsernn.sparsity.iss import GroupLasso

        return GroupLasso(s.lasso_lambda, s.zero_threshold, s.group_biases, "group" if s.method == "iss" else "l1")
    if s.method == "gmp":
        return GradualMagnitudePruning(
            density=s.density,
            start_step=(s.start_epoch - 1) * steps_per_epoch,
            end_step=s.end_epoch * steps_per_epoch,
            update_every=s.update_every,
            init=s.init,
            prunable=s.prunable,
            seed=config.train.seed,
        )
    return DynamicSparsity(
        density=s.density,
        init=s.init,
        death=s.death or "magnitude",
        growth=s.growth or "random",
        redistribution=s.redistribution or "none",
        death_rate=s.death_rate or 0.0,
        death_rate_min=s.death_rate_min or 0.0,
        update_every=s.update_every or "epoch",
        stop_epoch=s.stop_epoch,
        steps_per_epoch=steps_per_epoch,
        momentum_beta=config.optim.momentum or 0.9,
        prunable=s.prunable,
        seed=config.train.seed,
        dynamic=s.method != "static",
    )
