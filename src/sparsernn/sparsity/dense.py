"""Dense training: the Sparsifier whose every hook does nothing."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsernn.sparsity.registry import METHODS, Method


class Dense:
    """No sparsity: every hook does nothing."""

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        pass

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def describe(self) -> str:
        return ""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _dense_resolve(config) -> None:
    if config.sparsity.density != 1.0:
        raise ValueError("sparsity.density < 1 needs a sparse method (sparsity.method)")


METHODS.register(Method("dense", "no sparsity: every weight trained", lambda config, steps: Dense(),
                        resolve=_dense_resolve))
