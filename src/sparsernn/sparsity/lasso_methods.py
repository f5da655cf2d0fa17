"""The group-Lasso methods as registered: ``iss`` (group Lasso over ISS components, steered to a target
or not) and ``l1`` (plain L1), each with its settings model; the Sparsifier is ``lasso.GroupLasso``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from sparsernn.config import SparsityConfig
from sparsernn.sparsity.lasso import GroupLasso
from sparsernn.sparsity.registry import METHODS, Method
from sparsernn.validation import per_layer


class L1Settings(SparsityConfig):
    """L1 (and the base of ISS's settings): the penalty, its update and the zeroing threshold."""

    lasso_lambda: float | list[float] | None = Field(
        None, description="iss/l1: regularisation weight, global or one per recurrent layer (per-token mean loss: "
        "the ISS paper's values, for the loss summed over bptt steps, divided by bptt)")
    lasso_update: Literal["proximal", "subgradient"] | None = Field(
        None, description="iss/l1: proximal (group soft-threshold after each step, the default) | subgradient "
        "(the ISS paper: lambda*dR/dw in the gradient, then zero_threshold)")
    zero_threshold: float | None = Field(
        None, ge=0.0, description="iss/l1: weights below this are zeroed after each step (default 1e-4 with "
        "subgradient, 0 with proximal; sparsernn iss tau CKPT finds the paper's)")

    @field_validator("lasso_lambda")
    @classmethod
    def _non_negative_lambda(cls, value: float | list[float] | None) -> float | list[float] | None:
        values = value if isinstance(value, list) else [] if value is None else [value]
        if any(not v >= 0 for v in values):  # "not >=" catches NaN too
            raise ValueError(f"must be >= 0 (a negative penalty would grow the weights), got {value}")
        return value


class ISSSettings(L1Settings):
    """ISS: L1's settings over whole components, and the targets that steer lambda."""

    group_biases: bool = Field(False, description="iss: include the gate biases in each component")
    target_units: list[int] | None = Field(
        None, description="iss: components to keep per recurrent layer (one value for all), reached by "
        "steering lasso_lambda")
    target_multiply_adds: float | None = Field(
        None, gt=0.0, le=1.0, description="iss: keep this fraction of the recurrent multiply-adds (0.25: about 4x "
        "fewer), every layer narrowed alike")
    target_epoch: int | None = Field(None, gt=0, description="iss: epoch whose end the target is reached by "
                                     "(default 3/4 of train.epochs)")


def _resolve(config) -> None:
    from sparsernn.models.cells import CELLS

    s = config.sparsity
    if not CELLS[config.model.cell].supports_iss:
        raise ValueError(f"sparsity.method {s.method}: ISS components are not defined for cell {config.model.cell}")
    if s.density != 1.0:
        raise ValueError(f"sparsity.method {s.method} learns its sparsity: set lasso_lambda, not density")
    units, ratio = getattr(s, "target_units", None), getattr(s, "target_multiply_adds", None)  # l1: no targets
    steered = units is not None or ratio is not None
    if units is not None and ratio is not None:
        raise ValueError("sparsity.target_units and sparsity.target_multiply_adds: set one target, not both")
    if steered and s.lasso_lambda is not None:
        raise ValueError("sparsity.lasso_lambda: a target (target_units, target_multiply_adds) sets lambda every "
                         "step; leave lasso_lambda unset")
    if s.lasso_lambda is None and not steered:
        raise ValueError(f"sparsity.method {s.method} needs sparsity.lasso_lambda (e.g. --lasso-lambda 0.001) "
                         "or a target (--target-units, --target-multiply-adds)")
    if s.lasso_update is None:
        s.lasso_update = "proximal"
    if s.zero_threshold is None:
        # the paper's threshold is what makes subgradient steps remove anything; the proximal map zeroes
        # whole components itself
        s.zero_threshold = 1e-4 if s.lasso_update == "subgradient" else 0.0
    if steered:
        if s.lasso_update != "proximal":
            raise ValueError("sparsity.lasso_update: a target (target_units, target_multiply_adds) steers the "
                             "proximal update; leave lasso_update proximal")
        if s.target_epoch is None:
            s.target_epoch = max(1, (3 * config.train.epochs) // 4)
        if s.target_epoch > config.train.epochs:
            raise ValueError(f"sparsity.target_epoch {s.target_epoch} is after the last epoch ({config.train.epochs})")
        n_layers = len(config.model.hidden_sizes)
        if s.target_units is not None:
            try:
                targets = per_layer(s.target_units, n_layers, "values")
            except ValueError as exc:
                raise ValueError(f"sparsity.target_units: {exc} (give one per layer, or one for all)") from None
            for t, h in zip(targets, config.model.hidden_sizes):
                if not 0 < t <= h:
                    raise ValueError(f"sparsity.target_units: {t} is not in 1..{h} (the layer's width)")
    elif getattr(s, "target_epoch", None) is not None:
        raise ValueError("sparsity.target_epoch: only used with target_units or target_multiply_adds")


def _builder(mode: str):
    def build(config, steps_per_epoch: int) -> GroupLasso:
        s = config.sparsity
        iss = s if isinstance(s, ISSSettings) else ISSSettings()  # l1: no targets, no biases
        end = iss.target_epoch * steps_per_epoch if iss.target_epoch is not None else None
        # steered runs leave lasso_lambda unset: the controller sets it every step from the norms
        lambdas = 0.0 if s.lasso_lambda is None else s.lasso_lambda
        return GroupLasso(lambdas, s.zero_threshold, iss.group_biases, mode, s.lasso_update,
                          targets=iss.target_units, target_ratio=iss.target_multiply_adds, end_step=end)

    return build


METHODS.register(Method("iss", "ISS (Wen et al. 2018): group Lasso over intrinsic sparse structures, then compact",
                        _builder("group"), resolve=_resolve, settings=ISSSettings))
METHODS.register(Method("l1", "L1 regularisation over the same weights, zeroing below a threshold (unstructured)",
                        _builder("l1"), resolve=_resolve, settings=L1Settings))
