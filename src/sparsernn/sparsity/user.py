"""Sparse training of any PyTorch module: the ``sparsernn.sparsify`` verb.

A user's model has no run config, no ``recurrent_stack()`` and its own loop. ``sparsify`` builds the
method's Sparsifier from the same settings the CLI reads (validated and defaulted by the method's own
registry entry, so a setting means the same thing everywhere), points its masks at the weights chosen
here, and hands back a ``SparseTraining`` whose ``step()`` the user calls after ``optimizer.step()``.

Masks are bool buffers applied in place to the parameters themselves (``masks.Masking``), so an
``nn.LSTM`` keeps PyTorch's fused cuDNN/CPU kernels: there is no ``weight_orig`` reparametrisation.

The methods' schedules count epochs; a user's loop counts optimizer steps. With ``steps_per_epoch``
the ``*_epoch`` settings count epochs of that many steps and ``step()`` closes each epoch itself;
without it an epoch is one step, and a method that updates its masks at epoch ends is refused
rather than left silently static.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from sparsernn.config import RunConfig, validate
from sparsernn.errors import ConfigError
from sparsernn.models.discovery import recurrent_weight_names
from sparsernn.sparsity.masks import MaskedSparsifier
from sparsernn.sparsity.registry import METHODS, resolve_method

WeightFilter = Callable[[str, nn.Parameter], bool]
WeightChoice = WeightFilter | Iterable[tuple[nn.Module, str]] | None


def default_weight_names(model: nn.Module) -> list[str]:
    """The recurrent weight matrices and every ``nn.Linear``/``nn.Embedding`` weight, each parameter
    once (a tied embedding and decoder share one mask), in ``named_parameters`` order; biases stay dense."""
    wanted = set(recurrent_weight_names(model))
    for path, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            wanted.add(f"{path}.weight" if path else "weight")
    by_id = {id(model.get_parameter(name)) for name in wanted}
    return [name for name, param in model.named_parameters() if id(param) in by_id]


def chosen_weight_names(model: nn.Module, weights: WeightChoice) -> list[str]:
    """Qualified names of the weights to mask: the default set, those of ``named_parameters`` with
    2+ dimensions that ``weights(name, param)`` accepts, or the listed ``(module, name)`` pairs."""
    if weights is None:
        names = default_weight_names(model)
    elif callable(weights):
        names = [name for name, param in model.named_parameters() if param.dim() >= 2 and weights(name, param)]
    else:
        paths = {id(module): path for path, module in model.named_modules()}
        names, seen = [], set()
        for module, attr in weights:
            if id(module) not in paths:
                raise ConfigError(f"weights: {type(module).__name__} ({attr}) is not a module of the model")
            param = getattr(module, attr, None)
            if not isinstance(param, nn.Parameter):
                raise ConfigError(f"weights: {paths[id(module)] or 'the model'} has no parameter {attr!r}")
            if id(param) not in seen:  # a tied weight listed twice is one mask
                seen.add(id(param))
                names.append(f"{paths[id(module)]}.{attr}".lstrip("."))
    if not names:
        raise ConfigError("weights: no parameter chosen to sparsify")
    return names


def is_mask_method(method: str) -> bool:
    """Whether a registered method trains through masks (the DST methods, GMP): dense has none, and the
    group-Lasso methods (iss, l1; those reading ``lasso_lambda``) shrink weights instead."""
    return method != "dense" and "lasso_lambda" not in METHODS[method].fields


def method_config(method: str, density: float, total_steps: int | None, steps_per_epoch: int | None, seed: int,
                  settings: dict[str, Any]) -> RunConfig:
    """The run config the method's registry entry resolves (defaults filled, settings checked) for a run
    of ``total_steps`` optimizer steps; each problem is a one-line ``ConfigError``."""
    if "prunable" in settings:
        raise ConfigError("prunable: on a user's module choose the weights with weights= (a filter or "
                          "(module, name) pairs)")
    if method not in METHODS:
        raise ConfigError(f"method: unknown sparsity method {method!r}; expected one of {', '.join(METHODS.names())}")
    if not is_mask_method(method):
        masked = ", ".join(m.name for m in METHODS if is_mask_method(m.name))
        raise ConfigError(f"method {method}: not a mask method; sparsify takes {masked}")
    if total_steps is None:
        if method != "static":
            raise ConfigError(f"total_steps: method {method} schedules its updates over the whole run; give the "
                              "number of optimizer steps it will take")
        total_steps = 1
    if total_steps < 1 or (steps_per_epoch is not None and steps_per_epoch < 1):
        raise ConfigError(f"total_steps/steps_per_epoch: expected positive numbers, got "
                          f"{total_steps}/{steps_per_epoch}")
    epochs = math.ceil(total_steps / (steps_per_epoch or 1))
    config = validate({"sparsity": {"method": method, "density": density, **settings},
                       "train": {"epochs": epochs, "seed": seed}}, "sparsify")
    resolved = resolve_method(config)
    if getattr(resolved.sparsity, "update_every", None) == "epoch" and steps_per_epoch is None:  # static: none
        raise ConfigError(f"method {method} updates its masks at epoch ends: give steps_per_epoch= (or "
                          "update_every= a number of steps)")
    return resolved


class SparseTraining:
    """A Sparsifier bound to a user's model and optimizer; call ``step()`` after every ``optimizer.step()``.

    ``step()`` re-applies the masks to the weights and the optimizer's state (momentum, Adam moments)
    and runs the method's prune/regrow schedule; ``state_dict()`` holds everything a resumed run needs
    (the masks too, so it does not depend on the order the model's own state is loaded in).
    """

    def __init__(self, sparsifier: MaskedSparsifier, steps_per_epoch: int) -> None:
        self.sparsifier = sparsifier
        self.steps_per_epoch = steps_per_epoch
        self.steps = 0

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """``{parameter name: bool mask}`` (True: kept), the buffers themselves."""
        return dict(self.sparsifier.masking.masks)

    def density(self) -> float:
        """Fraction of the masked weights kept."""
        return self.sparsifier.masking.density()

    def step(self) -> None:
        # the gradients of this step are still there: SNFS's momentum reads them, RigL's growth too
        self.sparsifier.after_backward()
        self.sparsifier.after_step()
        self.steps += 1
        if self.steps % self.steps_per_epoch == 0:
            self.sparsifier.end_epoch(self.steps // self.steps_per_epoch, {})

    def state_dict(self) -> dict[str, Any]:
        masks = {name: mask.clone() for name, mask in self.sparsifier.masking.masks.items()}
        return {"steps": self.steps, "masks": masks, "sparsifier": self.sparsifier.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        masking = self.sparsifier.masking
        if set(state["masks"]) != set(masking.masks):
            raise ConfigError("state_dict: its masks are over other weights than this sparsify's")
        for name, mask in state["masks"].items():
            masking.set(name, mask.to(masking.masks[name].device))
        self.steps = state["steps"]
        self.sparsifier.load_state_dict(state["sparsifier"])
        masking.apply(self.sparsifier.optimizer)


def sparsify(model: nn.Module, optimizer: torch.optim.Optimizer, method: str = "rigl", density: float = 0.33,
             total_steps: int | None = None, *, weights: WeightChoice = None, steps_per_epoch: int | None = None,
             seed: int = 0, **settings: Any) -> SparseTraining:
    """Train ``model`` sparse with a registered mask method (static, set, rigl, snfs, dsr, selfish, gmp).

    ``density``: fraction of the chosen weights kept; ``total_steps``: optimizer steps the run will
    take (the horizon of the method's schedule); ``settings``: the CLI's sparsity settings (``init``,
    ``death``, ``growth``, ``redistribution``, ``death_rate``, ``update_every``, ``stop_epoch``, ...);
    ``weights``: the default (recurrent, Linear and Embedding weights), a filter ``(name, param) ->
    bool`` or ``(module, name)`` pairs. The masks are applied at once (weights and optimizer state).
    """
    config = method_config(method, density, total_steps, steps_per_epoch, seed, settings)
    names = chosen_weight_names(model, weights)
    sparsifier = METHODS[method].build(config, steps_per_epoch or 1)
    if not isinstance(sparsifier, MaskedSparsifier):
        raise ConfigError(f"method {method}: not a mask method")
    sparsifier.attach(model, optimizer, names)
    return SparseTraining(sparsifier, steps_per_epoch or 1)


__all__ = ["SparseTraining", "chosen_weight_names", "default_weight_names", "sparsify"]
