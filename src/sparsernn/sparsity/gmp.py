"""Gradual magnitude pruning (Zhu & Gupta 2017): dense-to-sparse, the baseline of sparse training.

Every ``update_every`` steps between ``start_step`` and ``end_step`` each matrix is pruned by
magnitude to its density on the cubic schedule ``s_t = s_f + (s_i - s_f)(1 - progress)^3``; masks
only shrink, pruned weights stay zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from pydantic import Field

from sparsernn.config import SparsityConfig
from sparsernn.sparsity import modes
from sparsernn.sparsity.masks import PRUNABLE_KINDS, MaskedSparsifier
from sparsernn.sparsity.registry import METHODS, Method, SparseInit, UpdateEvery, needs_density


class GradualMagnitudePruning(MaskedSparsifier):
    def __init__(
        self,
        density: float,
        start_step: int,
        end_step: int,
        update_every: int = 100,
        init: str = "uniform",
        prunable: Iterable[str] = PRUNABLE_KINDS,
        seed: int = 0,
    ) -> None:
        super().__init__(prunable, seed)
        if end_step <= start_step:
            raise ValueError(f"GMP needs end_step > start_step, got {start_step}..{end_step}")
        self.density = density
        self.start_step = start_step
        self.end_step = end_step
        self.update_every = update_every
        self.init = init
        self.final: dict[str, float] = {}

    def init_masks(self) -> None:
        shapes = {n: tuple(p.shape) for n, p in self.masking.params.items()}
        if self.init == "er":
            self.final = modes.erdos_renyi_densities(shapes, self.density)
        else:
            self.final = modes.uniform_densities(shapes, self.density)

    def target_counts(self, step: int) -> dict[str, int]:
        numel = {n: p.numel() for n, p in self.masking.params.items()}
        densities = {n: modes.gmp_density(step, self.start_step, self.end_step, d) for n, d in self.final.items()}
        return modes.nonzero_counts(numel, densities)

    def after_step(self) -> None:
        super().after_step()
        on_grid = (self.step - self.start_step) % self.update_every == 0
        if self.start_step < self.step <= self.end_step and (on_grid or self.step == self.end_step):
            self.prune_to(self.target_counts(self.step))

    @torch.no_grad()
    def prune_to(self, counts: dict[str, int]) -> None:
        for name, param in self.masking.params.items():
            excess = self.masking.active(name) - counts[name]
            if excess > 0:
                self.masking.set(name, modes.magnitude_death(param, self.masking.masks[name], excess))
        self.masking.apply(self.optimizer)


class GMPSettings(SparsityConfig):
    """Gradual magnitude pruning: the schedule of the cubic descent to the density."""

    init: SparseInit = "uniform"
    update_every: UpdateEvery = Field(100, description="steps between pruning steps (a number: gmp prunes by steps)")
    start_epoch: int | None = Field(None, gt=0, description="gmp: pruning starts after this many epochs, +1 "
                                    "(default 1)")
    end_epoch: int | None = Field(None, gt=0, description="gmp: target density reached at the end of this epoch "
                                  "(default: 75% of the planned length)")


def _resolve(config) -> None:
    """Pruning spans the first 75% of the planned run by default, leaving the rest to recover."""
    needs_density(config)
    s, epochs = config.sparsity, config.train.epochs
    if s.start_epoch is None:
        s.start_epoch = 1
    if s.end_epoch is None:
        s.end_epoch = max(s.start_epoch, math.ceil(0.75 * epochs))
    if s.end_epoch < s.start_epoch:
        raise ValueError(f"sparsity.end_epoch ({s.end_epoch}) is before start_epoch ({s.start_epoch})")
    if s.update_every == "epoch":
        raise ValueError("sparsity.update_every: gmp prunes every N steps; give a number")


def _build(config, steps_per_epoch: int) -> GradualMagnitudePruning:
    s = config.sparsity
    return GradualMagnitudePruning(density=s.density, start_step=(s.start_epoch - 1) * steps_per_epoch,
                                   end_step=s.end_epoch * steps_per_epoch, update_every=s.update_every, init=s.init,
                                   prunable=s.prunable, seed=config.train.seed)


METHODS.register(Method("gmp", "gradual magnitude pruning (Zhu & Gupta 2017): dense to sparse on a cubic schedule",
                        _build, resolve=_resolve, settings=GMPSettings))
