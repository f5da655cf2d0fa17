"""The Sparsifier protocol: everything the Trainer knows about sparsity.

The Trainer calls these hooks and nothing else; masks, pruning and regrowth, group Lasso and
thresholds all live behind them. Dense training is the no-op ``Dense`` sparsifier.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Sparsifier(Protocol):
    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Bind to the model and optimizer before the first step (e.g. create and apply masks)."""

    def after_backward(self) -> None:
        """Gradients are ready, not yet clipped or applied (e.g. add a group-Lasso gradient, mask grads)."""

    def after_step(self) -> None:
        """The optimizer has stepped (e.g. re-apply masks, zero optimizer state, threshold, prune/regrow)."""

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """An epoch and its validation are done (schedules, epoch-level prune/regrow)."""

    def describe(self) -> str:
        """A few words on the sparsity now, for the epoch log line ("" for none)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
