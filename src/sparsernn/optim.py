"""Optimizers beyond torch.optim: non-monotonically triggered averaged SGD (NT-ASGD, Merity et al. 2018).

SGD until the validation loss has not improved on the best of all but the last ``nonmono`` epochs,
then SGD with iterate averaging; evaluation uses the averaged weights. Averages are kept per element
with a per-element count (state ``ax`` and ``n``, shaped like the weight), so when masking zeroes an
optimizer's state at pruned positions, a weight's average restarts when it is regrown and covers
only the steps it was active: this is Selfish-RNN's SNT-ASGD with no extra code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from sparsernn.config import OptimConfig


class NTASGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float, weight_decay: float = 0.0, nonmono: int = 5) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self.nonmono = nonmono
        self.averaging = False
        self.val_history: list[float] = []

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim API
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                p.add_(grad, alpha=-group["lr"])
                if self.averaging:
                    state = self.state[p]
                    if "ax" not in state:
                        state["ax"] = torch.zeros_like(p)
                        state["n"] = torch.zeros_like(p)
                    state["n"].add_(1.0)
                    state["ax"].add_((p - state["ax"]) / state["n"])
        return loss

    def observe(self, val_loss: float) -> bool:
        """Record an epoch's validation loss; returns True when this switches averaging on."""
        history = self.val_history
        trigger = (not self.averaging and len(history) > self.nonmono
                   and val_loss > min(history[: -self.nonmono]))
        history.append(val_loss)
        if trigger:
            self.averaging = True
        return trigger

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """Temporarily swap in the averaged weights (a no-op before averaging starts)."""
        swapped = []
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state.get(p, {})
                    if self.averaging and "ax" in state:
                        saved = p.detach().clone()
                        # positions never averaged (n == 0) keep their weight
                        p.copy_(torch.where(state["n"] > 0, state["ax"], p))
                        swapped.append((p, saved))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, saved in swapped:
                    p.copy_(saved)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["nt_asgd"] = {"averaging": self.averaging, "val_history": list(self.val_history)}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        extra = state_dict.get("nt_asgd", {"averaging": False, "val_history": []})
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "nt_asgd"})
        self.averaging = extra["averaging"]
        self.val_history = list(extra["val_history"])


def learning_rate(config: OptimConfig, epoch: int) -> float:
    """Zaremba-style step schedule: ``lr * decay ** max(epoch - decay_start_epoch, 0)`` (epochs from 1)."""
    return config.lr * config.lr_decay ** max(epoch - config.decay_start_epoch, 0)


def build_optimizer(params, config: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``optim.name`` names, over ``params``."""
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "nt_asgd":
        return NTASGD(params, lr=config.lr, weight_decay=config.weight_decay, nonmono=config.nonmono)
    # Averaged SGD from the first step (Polyak averaging; t0=0, lambd=0 as in AWD-LSTM).
    return torch.optim.ASGD(params, lr=config.lr, t0=0, lambd=0.0, weight_decay=config.weight_decay)
