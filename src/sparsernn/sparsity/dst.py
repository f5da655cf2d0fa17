"""Dynamic sparse training: a fixed number of non-zero weights, pruned and regrown during training.

One class covers the sparse-to-sparse methods; they differ only in their modes, registered below
(static, SET, RigL, SNFS, DSR, Selfish-RNN; ``sparsernn methods`` lists each one's defaults); any
mode given explicitly overrides the method's.

Updates stop at ``stop_epoch``, by default the end of the run's planned length (75% of it for
RigL), so a run trained in segments follows the schedule of the whole run. Selfish-RNN's paper trains
with SNT-ASGD: its ``selfish-lstm`` presets set ``optim.name: nt_asgd`` (averaging then runs over
non-zero weights only, because masking zeroes the averaging state too); ``--method selfish`` on its
own keeps the optimizer the config names. An update removes ``death_rate`` of
each matrix's active weights (or that many globally), then regrows exactly as many as were
removed, spread over the matrices by the redistribution mode, so the total non-zero count never
changes. Regrown weights start at zero, with zero optimizer state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field

from sparsernn.config import SparsityConfig
from sparsernn.settings import one_of
from sparsernn.sparsity import modes
from sparsernn.sparsity.masks import PRUNABLE_KINDS, MaskedSparsifier
from sparsernn.sparsity.registry import METHODS, Method, SparseInit, UpdateEvery, needs_density, with_defaults


class DynamicSparsity(MaskedSparsifier):
    """Sparse-to-sparse training with the given modes.

    ``update_every``: steps between mask updates, or ``"epoch"`` for updates at epoch ends (never
    after ``stop_step`` / ``stop_epoch``). The death rate anneals by cosine from ``death_rate`` to
    ``death_rate_min`` over the steps up to ``stop_step``.

    An epoch-end update is decided at the epoch's end (its rate, from the step count then) and applied
    after the next optimizer step, as a step-level update is: the model an epoch ends with is the one
    validated, saved as best and measured (its spectrum), and no update follows the last epoch.
    """

    def __init__(
        self,
        density: float,
        init: str = "uniform",
        death: str = "magnitude",
        growth: str = "random",
        redistribution: str = "none",
        death_rate: float = 0.5,
        death_rate_min: float = 0.0,
        update_every: int | str = "epoch",
        stop_epoch: int | None = None,
        steps_per_epoch: int = 1,
        momentum_beta: float = 0.9,
        prunable: Iterable[str] = PRUNABLE_KINDS,
        seed: int = 0,
        dynamic: bool = True,
        threshold_tolerance: float = 0.05,
    ) -> None:
        super().__init__(prunable, seed)
        self.density = density
        self.init = init
        self.death = death
        self.growth = growth
        self.redistribution = redistribution
        self.death_rate = death_rate
        self.death_rate_min = death_rate_min
        self.update_every = update_every
        self.steps_per_epoch = steps_per_epoch
        self.stop_step = stop_epoch * steps_per_epoch if stop_epoch is not None else math.inf
        self.momentum_beta = momentum_beta
        self.dynamic = dynamic
        self.threshold_tolerance = threshold_tolerance
        self.thresholds: dict[str, float] = {}
        self.momenta: dict[str, torch.Tensor] = {}
        self.updates = 0
        self.pending_rate: float | None = None  # an epoch-end update not applied yet (its death rate)

    @property
    def uses_momentum(self) -> bool:
        return self.dynamic and (modes.GROWTH_MODES[self.growth].uses_momentum or self.redistribution == "momentum")

    def init_masks(self) -> None:
        params = self.masking.params
        shapes = {n: tuple(p.shape) for n, p in params.items()}
        if self.init == "er":
            densities = modes.erdos_renyi_densities(shapes, self.density)
        else:
            densities = modes.uniform_densities(shapes, self.density)
        counts = modes.nonzero_counts({n: p.numel() for n, p in params.items()}, densities)
        for name, param in params.items():
            self.masking.set(name, modes.random_mask(shapes[name], counts[name], self.generator, param.device))
        if self.uses_momentum:
            # SNFS's momentum of the dense gradient, kept here: the optimizer's own buffers are zeroed at
            # masked positions (and plain SGD has none), so they cannot rank inactive weights.
            self.momenta = {n: torch.zeros_like(p) for n, p in params.items()}

    def after_backward(self) -> None:
        if self.uses_momentum:
            beta = self.momentum_beta
            for name, param in self.masking.params.items():
                if param.grad is not None:
                    self.momenta[name].mul_(beta).add_(param.grad, alpha=1 - beta)

    def current_death_rate(self) -> float:
        horizon = self.stop_step if math.isfinite(self.stop_step) else 0
        if not horizon:
            return self.death_rate
        return modes.cosine_death_rate(self.step, int(horizon), self.death_rate, self.death_rate_min)

    def after_step(self) -> None:
        super().after_step()
        if self.pending_rate is not None:
            rate, self.pending_rate = self.pending_rate, None
            self.update(rate)
        if (self.dynamic and isinstance(self.update_every, int) and self.step % self.update_every == 0
                and self.step < self.stop_step):
            self.update(self.current_death_rate())

    def end_epoch(self, epoch: int, metrics: dict) -> None:
        if self.dynamic and self.update_every == "epoch" and self.step < self.stop_step:
            self.pending_rate = self.current_death_rate()

    @torch.no_grad()
    def update(self, rate: float) -> dict[str, tuple[int, int]]:
        """Prune ``rate`` of the active weights and regrow as many; returns ``{name: (removed, grown)}``."""
        masking = self.masking
        weights = {n: p.detach() for n, p in masking.params.items()}
        before = {n: m.clone() for n, m in masking.masks.items()}
        active = {n: int(m.sum()) for n, m in before.items()}
        pruned = modes.DEATH_MODES[self.death].prune(weights, before, rate, self)  # death
        removed = {n: active[n] - int(pruned[n].sum()) for n in weights}
        # redistribution of the regrowth budget
        capacity = {n: pruned[n].numel() - int(pruned[n].sum()) for n in weights}
        if self.redistribution == "none":
            budget = removed
        else:
            scores = modes.redistribution_scores(self.redistribution, weights, pruned, self.momenta or None)
            budget = modes.allocate(sum(removed.values()), scores, capacity)
        # growth
        grow, report = modes.GROWTH_MODES[self.growth].grow, {}
        for name in weights:
            grown = grow(pruned[name], budget[name], name, self)
            # a regrown position starts from zero, whatever it held before it was pruned
            new = grown & ~before[name]
            weights[name].masked_fill_(new, 0.0)
            masking.set(name, grown)
            report[name] = (removed[name], int((grown & ~pruned[name]).sum()))
        masking.apply(self.optimizer)
        self.updates += 1
        return report

    def state_dict(self) -> dict:
        return {**super().state_dict(), "thresholds": dict(self.thresholds), "momenta": dict(self.momenta),
                "updates": self.updates, "pending_rate": self.pending_rate}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.thresholds = dict(state["thresholds"])
        for name, value in state["momenta"].items():
            self.momenta[name].copy_(value)
        self.updates = state["updates"]
        # absent before 0.3: the update was applied at the epoch's end, before the checkpoint
        self.pending_rate = state.get("pending_rate")


# ---- the methods ---------------------------------------------------------------------------------


class StaticSettings(SparsityConfig):
    """A fixed random mask: its initial densities."""

    init: SparseInit = "uniform"


class DynamicSettings(StaticSettings):
    """Sparse-to-sparse training: how the mask is pruned and regrown, how often, and until when."""

    death: one_of(lambda: modes.DEATH_MODES.names()) = Field(
        "magnitude", description="prune mode, a name in modes.DEATH_MODES: magnitude | set | threshold | "
        "global_magnitude")
    growth: one_of(lambda: modes.GROWTH_MODES.names()) = Field(
        "random", description="regrowth mode, a name in modes.GROWTH_MODES: random | gradient | momentum")
    redistribution: Literal["none", "magnitude", "nonzeros", "momentum"] = Field(
        "none", description="regrowth budget across matrices: none | magnitude | nonzeros | momentum")
    death_rate: float = Field(0.5, ge=0.0, le=1.0, description="initial fraction of active weights pruned")
    death_rate_min: float = Field(0.0, ge=0.0, le=1.0, description="death rate at the stop (cosine)")
    update_every: UpdateEvery = "epoch"
    stop_epoch: int | None = Field(None, gt=0, description="no mask updates after this epoch (default: the planned "
                                   "length; 75% of it for rigl)")


def _build(config, steps_per_epoch: int) -> DynamicSparsity:
    s, dynamic = config.sparsity, isinstance(config.sparsity, DynamicSettings)
    return DynamicSparsity(
        density=s.density,
        init=s.init,
        death=s.death if dynamic else "magnitude",
        growth=s.growth if dynamic else "random",
        redistribution=s.redistribution if dynamic else "none",
        death_rate=s.death_rate if dynamic else 0.0,
        death_rate_min=s.death_rate_min if dynamic else 0.0,
        update_every=s.update_every if dynamic else "epoch",
        stop_epoch=s.stop_epoch if dynamic else None,
        steps_per_epoch=steps_per_epoch,
        momentum_beta=config.optim.momentum or 0.9,
        prunable=s.prunable,
        seed=config.train.seed,
        dynamic=dynamic,
    )


def _register(name: str, description: str, stop_fraction: float = 1.0, **defaults) -> None:
    def resolve(config) -> None:
        needs_density(config)
        if config.sparsity.stop_epoch is None:
            config.sparsity.stop_epoch = max(1, math.ceil(stop_fraction * config.train.epochs))

    METHODS.register(Method(name, description, _build, resolve=resolve,
                            settings=with_defaults(DynamicSettings, name, **defaults)))


METHODS.register(Method("static", "a fixed random mask, never updated", _build, resolve=needs_density,
                        settings=StaticSettings))
_register("set", "SET (Mocanu et al. 2018): magnitude-symmetric death, random growth, every epoch",
          init="er", death="set", growth="random", redistribution="none", death_rate=0.3, death_rate_min=0.3,
          update_every="epoch")
_register("rigl", "RigL (Evci et al. 2020): magnitude death, gradient growth, every 100 steps until 75%",
          stop_fraction=0.75, init="er", death="magnitude", growth="gradient", redistribution="none", death_rate=0.3,
          death_rate_min=0.0, update_every=100)
_register("snfs", "SNFS (Dettmers & Zettlemoyer 2019): momentum growth and redistribution",
          init="uniform", death="magnitude", growth="momentum", redistribution="momentum", death_rate=0.5,
          death_rate_min=0.005, update_every="epoch")
_register("dsr", "DSR (Mostafa & Wang 2019): global magnitude death, redistribution by non-zeros",
          init="uniform", death="global_magnitude", growth="random", redistribution="nonzeros", death_rate=0.5,
          death_rate_min=0.005, update_every="epoch")
_register("selfish", "Selfish-RNN (Liu et al. 2021): magnitude death, random growth; with SNT-ASGD in its presets",
          init="uniform", death="magnitude", growth="random", redistribution="none", death_rate=0.5,
          death_rate_min=0.005, update_every="epoch")
