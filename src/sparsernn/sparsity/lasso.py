"""Group Lasso over ISS components (``method: iss``) and plain L1 (``method: l1``) as a Sparsifier.

Two updates of the regulariser ``R = lambda * sum_k ||w_k||`` (or ``lambda * sum |w|``):

- ``proximal`` (default): after the optimizer step, the proximal map of ``step * R`` with ``step`` the
  current learning rate: each component is scaled by ``max(0, 1 - step * lambda / ||w_k||)`` (the group
  soft-threshold), each weight under L1 by ``sign(w) max(0, |w| - step * lambda)``. A component whose
  norm is below ``step * lambda`` becomes exactly zero in one step. It is the exact proximal gradient
  step for plain SGD and disjoint groups; an entry that two components share (``W_hh``'s row k, column
  j) is scaled by both factors at once (a parallel splitting of the overlapping groups). For momentum,
  Adam or NT-ASGD it is the same map with the nominal learning rate as step, a heuristic.
- ``subgradient`` (the ISS paper): ``lambda * dR/dw`` added to the gradient, then weights below
  ``zero_threshold`` zeroed; a component is removed only when thresholding has zeroed all of it, which
  a large learning rate makes rare (components oscillate around the threshold).

A component that is all zero is removed for good: its weights, gradients and optimizer state (momentum,
Adam moments, NT-ASGD averages) are held at exactly zero from then on.

**Targets.** With ``target_units`` (per layer) or ``target_multiply_adds`` (a fraction of the recurrent
multiply-adds), lambda is steered per layer on the group-norm quantile: the kept count should follow
the cubic schedule of gradual pruning, ``K(t)``, from the full width to the target at ``target_epoch``;
with ``e = kept - K(t)`` components in excess (a real number), each step's threshold ``lr * lambda``
is the norm at rank ``e`` among the living components (interpolated between neighbours), so the
proximal step removes exactly the ``floor(e)`` weakest and shrinks the next one part of the way; when
the layer is on or ahead of its schedule lambda is 0. The target is met exactly at ``target_epoch``
(any excess left then is cut by norm and counted in ``forced``, which the controller keeps at 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sparsernn.errors import LayerRemoved
from sparsernn.models.discovery import discover
from sparsernn.sparsity.iss import (
    EPSILON,
    _unit_view,
    group_sq_norms,
    removable_units,
    shrink_components,
    unit_slices,
    units_for_multiply_adds,
)
from sparsernn.sparsity.modes import gmp_density
from sparsernn.validation import per_layer

def group_soft_threshold(norms: torch.Tensor, step: float | torch.Tensor) -> torch.Tensor:
    """Scale factors of the group soft-threshold ``prox_{step ||.||}``: ``max(0, 1 - step / ||w||)``
    (0 for an all-zero group)."""
    step = torch.as_tensor(step, dtype=norms.dtype, device=norms.device)
    return torch.where(norms > step, 1.0 - step / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)


def soft_threshold(weights: torch.Tensor, step: float) -> torch.Tensor:
    """``prox_{step |.|}``: ``sign(w) max(0, |w| - step)``."""
    return weights.sign() * (weights.abs() - step).clamp_min(0.0)


def scheduled_units(full: int, target: int, step: int, end_step: int) -> float:
    """Components a layer should keep at ``step`` (a real number): the cubic schedule of gradual
    pruning (Zhu & Gupta) from ``full`` at step 0 to ``target`` at ``end_step``."""
    return max(float(target), full * gmp_density(step, 0, end_step, target / full))


def quantile_threshold(alive_norms: torch.Tensor, excess: float) -> float:
    """The group soft-threshold that removes ``floor(excess)`` of these components and shrinks the next
    one by the fractional part: the norm at rank ``excess`` (1-based, interpolated, 0 below rank 1)."""
    if excess <= 0 or alive_norms.numel() == 0:
        return 0.0
    ordered = torch.cat([alive_norms.new_zeros(1), alive_norms.sort().values]).tolist()
    whole = min(int(excess), len(ordered) - 1)
    if whole == len(ordered) - 1:
        return ordered[-1]
    return ordered[whole] + (excess - whole) * (ordered[whole + 1] - ordered[whole])


@torch.no_grad()
def zeroing_threshold(model: nn.Module, score: Callable[[nn.Module], float], margin: float = 0.01,
                      goal: str = "min", grid: int = 24, refine: int = 8) -> tuple[float, list[dict[str, float]]]:
    """The ISS paper's zeroing threshold tau: the largest tau such that zeroing every ISS weight with
    ``|w| < tau`` in a trained model keeps ``score`` (validation perplexity, ``goal`` "min") within
    ``margin`` (relative) of the model's own. A geometric grid from ``max|w| * 1e-6`` up to the first
    tau that is too large, then ``refine`` bisections (geometric) between the last good and first bad.
    Returns tau (0 when even the smallest one costs too much) and every trial, in order; the model's
    weights are restored.
    """
    names = sorted({s.param for s in unit_slices(model) if not s.is_bias})
    original = {name: model.get_parameter(name).detach().clone() for name in names}
    total = sum(w.numel() for w in original.values())
    base = score(model)
    limit = base * (1 + margin) if goal == "min" else base * (1 - margin)
    trials: list[dict[str, float]] = []

    def acceptable(tau: float) -> bool:
        zeroed = 0
        for name, w in original.items():
            small = w.abs() < tau
            zeroed += int(small.sum())
            model.get_parameter(name).copy_(w.masked_fill(small, 0.0))
        value = score(model)
        trials.append({"tau": tau, "zeroed": zeroed / total, "score": value})
        return value <= limit if goal == "min" else value >= limit

    top = max(float(w.abs().max()) for w in original.values())
    good, bad = 0.0, None
    try:
        for tau in torch.logspace(math.log10(top * 1e-6), math.log10(top), grid, dtype=torch.float64).tolist():
            if not acceptable(tau):
                bad = tau
                break
            good = tau
        if bad is not None and good > 0:
            for _ in range(refine):
                middle = math.sqrt(good * bad)
                good, bad = (middle, bad) if acceptable(middle) else (good, middle)
    finally:
        for name, w in original.items():
            model.get_parameter(name).copy_(w)
    trials.insert(0, {"tau": 0.0, "zeroed": 0.0, "score": base})
    return good, trials


class GroupLasso:
    """Sparsifier: group Lasso over ISS components (``mode`` "group") or L1 over the same weights ("l1").

    ``lambdas`` is one value or one per recurrent layer; ``update`` "proximal" or "subgradient" (see
    the module docstring); ``targets`` kept components per layer (or ``target_ratio`` of the recurrent
    multiply-adds) reached by ``end_step``.
    """

    def __init__(self, lambdas: float | list[float], threshold: float = 1e-4, biases: bool = False,
                 mode: str = "group", update: str = "proximal", targets: list[int] | None = None,
                 target_ratio: float | None = None, end_step: int | None = None) -> None:
        if update not in ("proximal", "subgradient"):
            raise ValueError(f"lasso update must be proximal or subgradient, got {update!r}")
        if (targets is not None or target_ratio is not None) and (mode != "group" or not end_step
                                                                   or update != "proximal"):
            raise ValueError("a kept-component target steers the proximal step of group Lasso (method iss) "
                             "and needs an end step")
        self.lambdas = lambdas
        self.threshold = threshold
        self.biases = biases
        self.mode = mode
        self.update = update
        self.requested_targets = targets
        self.target_ratio = target_ratio
        self.end_step = end_step
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.removed: list[torch.Tensor] = []
        self.targets: list[int] | None = None
        self.step = 0
        self.forced = 0

    # ---- setup -----------------------------------------------------------------------------------

    @property
    def group_biases(self) -> bool:
        """The setting ``sparsity.group_biases`` this runs with (the gate biases in each component)."""
        return self.biases

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.setup(model, optimizer, discover(model), unit_slices(model), model.decoder.weight.device,
                   lambda ratio: units_for_multiply_adds(model, ratio))

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, stack: tuple, slices: list,
              device: torch.device, units_for: Callable[[float], list[int]]) -> None:
        """Attach to any model described by ``stack`` and its ISS ``slices`` (a user's module: discovery);
        ``units_for(ratio)``: per-layer widths whose recurrent multiply-adds are that fraction."""
        self.model, self.optimizer = model, optimizer
        self.slices = [s for s in slices if self.biases or not s.is_bias]
        self.params = sorted({s.param for s in self.slices})
        self.full = [layer.hidden_size for layer in stack]
        values = [float(v) for v in per_layer(self.lambdas, len(stack), "lambdas")]
        # float64 so that a steered lambda resumes bit for bit
        self.layer_lambdas = torch.tensor(values, dtype=torch.float64)
        if self.target_ratio is not None:
            self.targets = units_for(self.target_ratio)
        elif self.requested_targets is not None:
            targets = per_layer(self.requested_targets, len(stack), "unit targets")
            bad = [(t, h) for t, h in zip(targets, self.full) if not 0 < t <= h]
            if bad:
                raise ValueError(f"a unit target must be in 1..the layer's width, got {bad[0][0]} for width {bad[0][1]}")
            self.targets = targets
        self.removed = [torch.zeros(h, dtype=torch.bool, device=device) for h in self.full]

    def _sq_norms(self) -> list[torch.Tensor]:
        """Per layer, each component's squared norm (``iss.group_sq_norms``; a user's module: its own)."""
        return group_sq_norms(self.model, self.slices, self.biases)

    def _removable(self) -> list[torch.Tensor]:
        """Per layer, True where a component is all zero (``iss.removable_units``)."""
        return removable_units(self.model, self.biases)

    # ---- the hooks -------------------------------------------------------------------------------

    @torch.no_grad()
    def after_backward(self) -> None:
        # a component that is all zero now is removed for good: no gradient may revive it
        self._mark_removed(self._removable())
        self._zero_removed(grads=True)
        if self.update == "subgradient":
            self._add_subgradient()

    @torch.no_grad()
    def after_step(self) -> None:
        if self.update == "proximal":
            self._proximal_step(self._learning_rate())
        if self.threshold > 0:
            for name in self.params:
                p = self.model.get_parameter(name)
                p.masked_fill_(p.abs() < self.threshold, 0.0)
        self._mark_removed(self._removable())
        self.step += 1
        self._refuse_an_empty_layer()
        if self.targets is not None and self.step == self.end_step:
            self._cut_to_targets()
        self._zero_removed(grads=False)

    def _refuse_an_empty_layer(self) -> None:
        """Stop where a fixed lambda removes a whole layer (targets keep at least one unit per layer)."""
        for n, removed in enumerate(self.removed):
            if bool(removed.all()):
                lam = self.layer_lambdas[n].item()
                option = "--lasso-lambda" if self.mode == "group" else "--lasso-lambda (l1)"
                raise LayerRemoved(
                    f"lasso_lambda {lam:g} removed all {removed.numel()} units of recurrent layer {n} "
                    f"(regulariser step {self.step}); use a smaller {option}, or let the size be "
                    "steered: --target-units / --target-multiply-adds (method iss)")

    def end_epoch(self, epoch: int, metrics: dict) -> None:
        metrics["iss_sizes"] = self.kept()
        if self.mode == "group":
            # per layer, every component's norm: the curves of the "group norms over epochs" plot
            metrics["iss_norms"] = [[float(f"{v:.4g}") for v in sq.clamp_min(0).sqrt().tolist()]
                                    for sq in self._sq_norms()]
        else:
            metrics["l1_zero_fraction"] = self._zero_fraction()
        if self.targets is not None:
            metrics["iss_lambdas"] = [float(f"{v:.4g}") for v in self.layer_lambdas.tolist()]
            metrics["iss_forced"] = self.forced

    # ---- the regulariser -------------------------------------------------------------------------

    def _learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 1.0

    def _add_subgradient(self) -> None:
        lambdas = self.layer_lambdas.tolist()
        if self.mode == "l1":
            for name in self.params:
                p = self.model.get_parameter(name)
                if p.grad is not None:
                    # the weight belongs to the L1 term once, whatever layers index it
                    p.grad.add_(p.sign(), alpha=self._l1_lambda(name, lambdas))
            return
        norms = [torch.sqrt(EPSILON + n.clamp_min(0)) for n in self._sq_norms()]
        factors = [lam / n for lam, n in zip(lambdas, norms)]  # d sqrt(eps+||w||^2) / dw = w / norm
        scale: dict[str, torch.Tensor] = {}
        for s in self.slices:
            p = self.model.get_parameter(s.param)
            term = factors[s.layer].view(1, 1, s.hidden, 1).expand(_unit_view(p, s).shape).reshape(p.shape)
            if s.crosses:
                term = term.clone()
                term.view(s.blocks, s.hidden, s.hidden).diagonal(dim1=1, dim2=2).sub_(factors[s.layer])
            scale[s.param] = scale[s.param] + term if s.param in scale else term
        for name, factor in scale.items():
            p = self.model.get_parameter(name)
            if p.grad is not None:
                p.grad.addcmul_(p, factor)

    def _l1_lambda(self, name: str, lambdas: list[float]) -> float:
        return max(lambdas[s.layer] for s in self.slices if s.param == name)

    def _proximal_step(self, lr: float) -> None:
        if self.mode == "l1":
            lambdas = self.layer_lambdas.tolist()
            for name in self.params:
                p = self.model.get_parameter(name)
                p.copy_(soft_threshold(p, lr * self._l1_lambda(name, lambdas)))
            return
        norms = [sq.clamp_min(0).sqrt() for sq in self._sq_norms()]
        if self.targets is not None:
            self._steer(norms, lr)
        lambdas = self.layer_lambdas.tolist()
        if not any(lambdas):  # on schedule, or at the target: nothing shrinks this step
            return
        factors = [group_soft_threshold(n, lr * lam) for n, lam in zip(norms, lambdas)]
        shrink_components(self.model, self.slices, factors)

    # ---- the target controller -------------------------------------------------------------------

    def _steer(self, norms: list[torch.Tensor], lr: float) -> None:
        """Each layer's lambda for this step, from its excess over the schedule (module docstring)."""
        for n, (target, full) in enumerate(zip(self.targets, self.full)):
            alive = ~self.removed[n]
            excess = int(alive.sum()) - scheduled_units(full, target, self.step + 1, self.end_step)
            self.layer_lambdas[n] = quantile_threshold(norms[n][alive], excess) / lr

    def _cut_to_targets(self) -> None:
        norms = [sq.clamp_min(0).sqrt() for sq in self._sq_norms()]
        factors = []
        for n, (target, norm) in enumerate(zip(self.targets, norms)):
            factor = torch.ones_like(norm)
            alive = (~self.removed[n]).nonzero().squeeze(1)
            excess = len(alive) - target
            if excess > 0:
                factor[alive[norm[alive].argsort()[:excess]]] = 0.0
                self.forced += excess
            factors.append(factor)
        shrink_components(self.model, self.slices, factors)
        self._mark_removed(self._removable())

    # ---- removed components ----------------------------------------------------------------------

    def _mark_removed(self, zero: list[torch.Tensor]) -> None:
        self.removed = [r | z for r, z in zip(self.removed, zero)]

    def _zero_removed(self, grads: bool) -> None:
        if not any(bool(r.any()) for r in self.removed):
            return
        for s in self.slices:
            removed = self.removed[s.layer]
            if not removed.any():
                continue
            p = self.model.get_parameter(s.param)
            if grads:
                if p.grad is not None:
                    _unit_view(p.grad, s)[:, :, removed, :] = 0.0
                continue
            _unit_view(p.data, s)[:, :, removed, :] = 0.0
            # momentum, Adam's moments, NT-ASGD's averages and counts: a removed weight has no history
            state = self.optimizer.state.get(p, {}) if self.optimizer is not None else {}
            for value in state.values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    _unit_view(value, s)[:, :, removed, :] = 0

    # ---- reporting and state ---------------------------------------------------------------------

    def kept(self) -> list[int]:
        """Components (hidden units) kept per layer."""
        return [int((~r).sum()) for r in self.removed]

    def describe(self) -> str:
        if self.mode != "group":
            return f"zero {self._zero_fraction():.3f}"
        sizes = " ".join(f"{k}/{r.numel()}" for k, r in zip(self.kept(), self.removed))
        target = f" (target {' '.join(map(str, self.targets))})" if self.targets is not None else ""
        return f"units kept {sizes}{target}"

    def _zero_fraction(self) -> float:
        params = [self.model.get_parameter(name) for name in {s.param for s in self.slices if not s.is_bias}]
        return sum(int((p == 0).sum()) for p in params) / max(sum(p.numel() for p in params), 1)

    def state_dict(self) -> dict[str, Any]:
        return {"removed": list(self.removed), "lambdas": self.layer_lambdas.clone(),
                "step": self.step, "forced": self.forced}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.removed = [r.to(torch.bool) for r in state["removed"]]
        if "lambdas" in state:  # absent in checkpoints of sparsernn 0.2 (fixed lambdas, no step count)
            self.layer_lambdas = state["lambdas"].to(torch.float64).cpu()
            self.step, self.forced = int(state["step"]), int(state["forced"])
