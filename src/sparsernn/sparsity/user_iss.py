"""ISS on a user's module: group Lasso and compaction driven by discovery (``sparsernn.discover``).

The toolkit's ISS (``sparsity.iss``) reads ``model.recurrent_stack()``; a user's module has none, so the
same ``UnitSlice`` group maps are built here from the discovered ``RecurrentLayer`` tuple: for unit k of
layer n, the gate rows of that layer's ``*_l{i}`` weights (and biases), column k of its ``W_hh``, and
column k of each receiver's input weights (the next layer's ``W_ih``, a ``nn.Linear`` head's weight).
The norms, the proximal shrink and the slicing are ``sparsity.iss``'s own (``_unit_view``,
``shrink_components``), so the math lives in one place.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from sparsernn.errors import DiscoveryError
from sparsernn.models.cells import UnitSlice
from sparsernn.models.discovery import discover, layer_parameter_names
from sparsernn.models.stack import RecurrentLayer
from sparsernn.sparsity.iss import _mark_crossings, _unit_view, shrink_components
from sparsernn.sparsity.lasso import group_soft_threshold

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
            slices += _receiver_slices(model, receiver, position, n, directions, layer.hidden_size)
    return _mark_crossings(slices)


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


class UserGroupLasso:
    """ISS group Lasso on a user's module: after each ``optimizer.step()`` the caller calls ``step()``,
    which applies the proximal step ``w_g <- w_g * max(0, 1 - lr*lam/||w_g||)`` to every component (the
    toolkit's ``group_soft_threshold``), so components reach exact zero, and keeps zeroed ones zero."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, example_input: Any,
                 lam: float, biases: bool = True) -> None:
        if lam < 0:
            raise ValueError(f"group lasso lam must be >= 0, got {lam}")
        self.model, self.optimizer, self.lam, self.biases = model, optimizer, float(lam), biases
        self.stack = discover(model, example_input)
        self.slices = [s for s in discovered_slices(model, self.stack) if biases or not s.is_bias]

    @torch.no_grad()
    def step(self) -> None:
        """The proximal step at the optimizer's current learning rate."""
        lr = float(self.optimizer.param_groups[0]["lr"])
        norms = [v.sqrt() for v in component_sq_norms(self.model, self.stack, self.slices, self.biases)]
        factors = [group_soft_threshold(v, lr * self.lam) for v in norms]
        shrink_components(self.model, self.slices, factors)

    def kept(self) -> list[int]:
        """Per layer, the components not yet all zero."""
        return [int((v > 0).sum()) for v in component_sq_norms(self.model, self.stack, self.slices, True)]

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = float(state["lam"])


def group_lasso(model: nn.Module, optimizer: torch.optim.Optimizer, example_input: Any, lam: float = 1e-3,
                biases: bool = True) -> UserGroupLasso:
    """ISS group Lasso (proximal) over the discovered layers of ``model``; call ``.step()`` after
    ``optimizer.step()``. Biases join their unit's component by default, so compaction is exact."""
    return UserGroupLasso(model, optimizer, example_input, lam, biases)
