"""ISS on a user's module: group Lasso and compaction driven by discovery (``sparsernn.discover``).

The toolkit's ISS (``sparsity.iss``) reads its models' declared stacks; a user's module has none, so the
same ``UnitSlice`` group maps are built here from the discovered ``RecurrentLayer`` tuple: for unit k of
layer n, the gate rows of that layer's ``*_l{i}`` weights (and biases), column k of its ``W_hh``, and
column k of each receiver's input weights (the next layer's ``W_ih``, a ``nn.Linear`` head's weight). A
tied embedding (its weight is the head's) makes unit k of the last layer also embedding dimension k,
which the first layer reads: its ``W_ih`` column k joins the component (as the toolkit's tied models).
The norms, the proximal shrink and the slicing are ``sparsity.iss``'s own (``_unit_view``,
``shrink_components``), so the math lives in one place.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from sparsernn.errors import ConfigError, DiscoveryError
from sparsernn.models.cells import UnitSlice
from sparsernn.models.discovery import discover, layer_parameter_names
from sparsernn.models.stack import RecurrentLayer
from sparsernn.sparsity.iss import _mark_crossings, _unit_view, widths_for_multiply_adds
from sparsernn.sparsity.lasso import GroupLasso

_LAYER_REF = re.compile(r"^(?P<module>.*)\[(?P<index>\d+)\]$")


def discovered_slices(model: nn.Module, stack: tuple[RecurrentLayer, ...]) -> list[UnitSlice]:
    """Every parameter dimension indexed by some discovered layer's units (``UnitSlice`` per layer n of
    ``stack``); a receiver that is neither a recurrent layer nor a ``nn.Linear`` is refused."""
    position = {(layer.module, layer.index): n for n, layer in enumerate(stack)}
    slices: list[UnitSlice] = []
    for n, layer in enumerate(stack):
        module = model.get_submodule(layer.module)
        gates = len(layer.gates)
        for name in layer_parameter_names(module, layer.index):
            full = f"{layer.module}.{name}"
            recurrent = name.startswith("weight_hh")
            slices.append(UnitSlice(full, 0, n, gates, layer.hidden_size, is_bias=name.startswith("bias")))
            if recurrent:
                slices.append(UnitSlice(full, 1, n, 1, layer.hidden_size))
        directions = 2 if layer.bidirectional else 1
        for receiver in layer.receivers:
            head = None if _LAYER_REF.match(receiver) else model.get_submodule(receiver)
            if isinstance(head, nn.Embedding):
                slices += _tied_slices(model, stack, n, receiver)
                continue
            slices += _receiver_slices(model, receiver, position, n, directions, layer.hidden_size)
            if head is not None:
                _refuse_unproven_tie(model, receiver, layer)
    return _mark_crossings(slices)


def _tied_slices(model: nn.Module, stack: tuple[RecurrentLayer, ...], n: int, embedding: str) -> list[UnitSlice]:
    """The first layer's input columns that read a tied embedding's dimensions (discovery proved that
    layer its only reader); the embedding's own columns are its head's weight, already in the component."""
    layer, first = stack[n], stack[0]
    if layer.bidirectional and n == 0:
        raise DiscoveryError(f"{embedding}: a tied embedding read by the bidirectional layer it is tied to is not "
                             "supported by ISS")
    module = model.get_submodule(first.module)
    return [UnitSlice(f"{first.module}.{name}", 1, n, 2 if layer.bidirectional else 1, layer.hidden_size)
            for name in layer_parameter_names(module, first.index) if name.startswith("weight_ih")]


def _refuse_unproven_tie(model: nn.Module, receiver: str, layer: RecurrentLayer) -> None:
    """A head whose weight an embedding shares, when discovery could not prove who reads that embedding."""
    weight = getattr(model.get_submodule(receiver), "weight", None)
    for path, module in model.named_modules():
        if isinstance(module, nn.Embedding) and module.weight is weight and path not in layer.receivers:
            raise DiscoveryError(f"{path}: tied to {receiver}'s weight, but its output is not proven to reach only "
                                 "the first recurrent layer unchanged: ISS cannot narrow the two together")


def _receiver_slices(model: nn.Module, receiver: str, position: dict[tuple[str, int], int], n: int,
                     directions: int, hidden: int) -> list[UnitSlice]:
    """The input columns of one receiver that read layer n's units."""
    ref = _LAYER_REF.match(receiver)
    if ref:
        path, index = ref["module"], int(ref["index"])
        if (path, index) not in position:
            raise DiscoveryError(f"{receiver}: receiver is not a discovered recurrent layer")
        target = model.get_submodule(path)
        return [UnitSlice(f"{path}.{name}", 1, n, directions, hidden)
                for name in layer_parameter_names(target, index) if name.startswith("weight_ih")]
    target = model.get_submodule(receiver)
    if isinstance(target, nn.Linear):
        return [UnitSlice(f"{receiver}.weight", 1, n, directions, hidden)]
    raise DiscoveryError(f"{receiver}: a {type(target).__name__} receiver is not supported by ISS (only a next "
                         "recurrent layer or a nn.Linear head)")


def component_sq_norms(model: nn.Module, stack: tuple[RecurrentLayer, ...], slices: list[UnitSlice],
                       biases: bool = True) -> list[torch.Tensor]:
    """Per layer, the squared L2 norm of each ISS component, each weight counted once (the crossing of
    row k and column k of ``W_hh`` subtracted once, as ``iss.group_sq_norms``)."""
    norms = [torch.zeros(layer.hidden_size, dtype=torch.float64) for layer in stack]
    for s in slices:
        if s.is_bias and not biases:
            continue
        w = model.get_parameter(s.param).detach().double().cpu()
        norms[s.layer] = norms[s.layer] + _unit_view(w.pow(2), s).sum(dim=(0, 1, 3))
        if s.crosses:
            meet = w.view(s.blocks, s.hidden, s.hidden).diagonal(dim1=1, dim2=2)
            norms[s.layer] = norms[s.layer] - meet.pow(2).sum(0)
    return [v.clamp_min(0) for v in norms]


def stack_multiply_adds(model: nn.Module, stack: tuple[RecurrentLayer, ...], sizes: list[float]) -> float:
    """Recurrent multiply-adds per step of a discovered stack at widths ``sizes``: a layer that receives
    another's output reads that layer's width (both directions), the first layer of a tied model the last
    layer's (its input is the tied embedding), any other its own input size."""
    source = {receiver: m for m, layer in enumerate(stack) for receiver in layer.receivers}
    tied = any(isinstance(model.get_submodule(r), nn.Embedding) for r in stack[-1].receivers
               if not _LAYER_REF.match(r))
    total = 0.0
    for n, layer in enumerate(stack):
        reads = len(stack) - 1 if n == 0 and tied else source.get(layer.name)
        width = layer.input_size if reads is None else sizes[reads] * (2 if stack[reads].bidirectional else 1)
        total += layer.spec.multiply_adds(width, sizes[n], layer.bidirectional, layer.depth)
    return total


class _DiscoveredLasso(GroupLasso):
    """``GroupLasso`` over a discovered stack: its norms and removable components from the user path's slices."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, stack: tuple[RecurrentLayer, ...],
                 **settings: Any) -> None:
        super().__init__(**settings)
        self.stack, self.device = stack, next(model.parameters()).device
        full = [float(layer.hidden_size) for layer in stack]
        self.setup(model, optimizer, stack, discovered_slices(model, stack), self.device,
                   lambda ratio: widths_for_multiply_adds(full, lambda sizes: stack_multiply_adds(model, stack, sizes),
                                                          ratio))

    def _sq_norms(self) -> list[torch.Tensor]:
        return [v.to(self.device) for v in component_sq_norms(self.model, self.stack, self.slices, self.biases)]

    def _removable(self) -> list[torch.Tensor]:
        zero = [torch.ones(h, dtype=torch.bool, device=self.device) for h in self.full]
        for s in self.slices:
            w = self.model.get_parameter(s.param).detach()
            zero[s.layer] &= ~(_unit_view(w, s) != 0).any(dim=3).any(dim=1).any(dim=0).to(self.device)
        return zero


class UserGroupLasso:
    """The toolkit's ISS group Lasso (``sparsity.lasso.GroupLasso``: the proximal step, the size-target
    controller and its schedule, removed components held at zero in the weights and the optimizer state)
    over the discovered components of a user's module; ``step()`` after each ``optimizer.step()``."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, example_input: Any,
                 **settings: Any) -> None:
        self.model, self.stack = model, discover(model, example_input)
        try:
            self.lasso = _DiscoveredLasso(model, optimizer, self.stack, **settings)
        except DiscoveryError:
            raise
        except ValueError as exc:  # the unit targets against the layers' widths
            raise ConfigError(f"group_lasso: {exc}") from None
        self.slices = self.lasso.slices

    @property
    def targets(self) -> list[int] | None:
        """Kept units per layer at the target epoch (None: a fixed lambda)."""
        return self.lasso.targets

    @property
    def lambdas(self) -> list[float]:
        """Each layer's lambda at the last step (steered when there is a target)."""
        return self.lasso.layer_lambdas.tolist()

    def step(self) -> None:
        """The proximal step at the optimizer's learning rate (the size controller steering lambda when
        there is a target), then removed components zeroed in the weights and the optimizer's state."""
        self.lasso.after_step()

    def kept(self) -> list[int]:
        """Per layer, the components not (yet) all zero."""
        return [int((~zero).sum()) for zero in self.lasso._removable()]

    def state_dict(self) -> dict[str, Any]:
        return self.lasso.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lasso.load_state_dict(state)


def group_lasso(model: nn.Module, optimizer: torch.optim.Optimizer, example_input: Any,
                lasso_lambda: float | None = None, *, target_units: list[int] | int | None = None,
                target_multiply_adds: float | None = None, target_epoch: int | None = None,
                total_steps: int | None = None, steps_per_epoch: int | None = None, zero_threshold: float = 0.0,
                group_biases: bool = True, lasso_update: str = "proximal") -> UserGroupLasso:
    """ISS group Lasso over the discovered layers of ``model``, with the CLI's ISS settings; call
    ``.step()`` after ``optimizer.step()``.

    ``lasso_lambda``: a fixed lambda (default 1e-3 without a target); or a size target, ``target_units``
    (kept units per layer, one for all) or ``target_multiply_adds`` (a fraction of the recurrent
    multiply-adds), reached at ``target_epoch`` (epochs of ``steps_per_epoch`` steps, default 1; default
    epoch: 3/4 of ``total_steps``) by steering lambda on the cubic schedule (``sparsity.lasso``).
    ``group_biases`` (default True here, so compaction is exact): biases join their unit's component.
    """
    per_epoch = steps_per_epoch or 1
    targeted = target_units is not None or target_multiply_adds is not None
    if target_units is not None and target_multiply_adds is not None:
        raise ConfigError("group_lasso: target_units and target_multiply_adds: set one target, not both")
    if targeted and lasso_lambda is not None:
        raise ConfigError("group_lasso: lasso_lambda: a target sets lambda every step; leave lasso_lambda unset")
    if lasso_update != "proximal":
        raise ConfigError(f"group_lasso: lasso_update {lasso_update!r}: on your own loop only the proximal update "
                          "runs (.step() after optimizer.step())")
    if per_epoch < 1 or (total_steps is not None and total_steps < 1):
        raise ConfigError(f"group_lasso: total_steps/steps_per_epoch: expected positive numbers, got "
                          f"{total_steps}/{steps_per_epoch}")
    end = None
    if targeted:
        epochs = None if total_steps is None else math.ceil(total_steps / per_epoch)
        if target_epoch is None and epochs is None:
            raise ConfigError("group_lasso: a size target needs total_steps (or target_epoch): when to reach it")
        target_epoch = max(1, (3 * epochs) // 4) if target_epoch is None else target_epoch
        if target_epoch < 1 or (epochs is not None and target_epoch > epochs):
            raise ConfigError(f"group_lasso: target_epoch {target_epoch} is not in 1..{epochs} (the last epoch)")
        end = target_epoch * per_epoch
    elif target_epoch is not None:
        raise ConfigError("group_lasso: target_epoch: only used with target_units or target_multiply_adds")
    units = [target_units] if isinstance(target_units, int) else target_units
    lam = 0.0 if targeted else (1e-3 if lasso_lambda is None else lasso_lambda)
    if lam < 0:
        raise ConfigError(f"group_lasso: lasso_lambda must be >= 0, got {lam}")
    return UserGroupLasso(model, optimizer, example_input, lambdas=lam, threshold=zero_threshold, biases=group_biases,
                          targets=units, target_ratio=target_multiply_adds, end_step=end)
