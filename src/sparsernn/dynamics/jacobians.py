"""One step of a recurrent stack and its Jacobian, in closed form, batched over K samples.

The state of layer ``l`` is ``(h, c)`` for an LSTM in ``"hc"`` mode (the true dynamical state), ``h``
in ``"h"`` mode (``c_{t-1}`` held fixed inside the step — what the public hyperpruning/Lyapunov code
computes) and ``h`` for GRU/RNN. Layer ``l`` reads layer ``l-1``'s *new* ``h`` in the same step, so
the stack's Jacobian is block lower triangular: each layer has a diagonal block (its new state with
respect to its old one) and an input block (with respect to the new ``h`` below it).

Each cell type writes its own step and Jacobian (``sparsernn.models.cells``): the Jacobian is kept as
gate-derivative vectors plus the shared weight matrices, never as the full ``n x n`` matrix, and
``times(basis)`` pushes a basis through the diagonal block (``J @ Q``, never its transpose). This
module chains the layers of a stack. Everything here is pure: tensors in, tensors out.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsernn.errors import DiscoveryError
from sparsernn.models.cells import CELLS, CellJacobian, CellParams
from sparsernn.models.cells.base import new_basis
from sparsernn.models.discovery import discover
from sparsernn.models.stack import RecurrentLayer


def stack_params(model: nn.Module, dtype: torch.dtype | None = None,
                 stack: tuple[RecurrentLayer, ...] | None = None) -> list[CellParams]:
    """The weights of every layer of ``stack`` (default: ``discover(model)``), cast to ``dtype``;
    a layer of a multi-layer PyTorch module reads its own ``*_l{index}`` weights."""
    params = []
    stack = discover(model) if stack is None else stack
    for position, layer in enumerate(stack):
        # a bidirectional last layer (a tagger's BiLSTM) contributes its forward direction, the state it
        # carries left to right; one that feeds another layer hands it the future, no forward system
        if layer.bidirectional and position < len(stack) - 1:
            raise DiscoveryError(f"{layer.name}: a bidirectional layer that feeds another is not a forward dynamical "
                             "system")
        params.append(layer.spec.params(model.get_submodule(layer.module), dtype, layer=layer.index or 0))
    return params


def state_sizes(layers: list[CellParams] | tuple[RecurrentLayer, ...], mode: str) -> list[int]:
    """Size of each layer's block of the state vector."""
    return [CELLS[layer.cell].state_size(layer.hidden_size, mode) for layer in layers]


State = list[tuple[torch.Tensor, torch.Tensor | None]]


def stack_step(layers: list[CellParams], states: State, x: torch.Tensor,
               mode: str = "hc") -> tuple[State, list[CellJacobian]]:
    """One step of the whole stack: the new per-layer states and each layer's Jacobian."""
    new_states, jacobians = [], []
    for p, (h, c) in zip(layers, states):
        h, c, jacobian = CELLS[p.cell].step(p, h, c, x, mode)
        new_states.append((h, c))
        jacobians.append(jacobian)
        x = h
    return new_states, jacobians


def stack_times(jacobians: list[CellJacobian], basis: torch.Tensor) -> torch.Tensor:
    """The whole stack's Jacobian times ``basis (K, n, k)`` (row blocks in layer order), without
    materialising it: layer ``l``'s rows are its diagonal block times its rows of the basis plus its
    input block times the new ``h`` rows of layer ``l-1`` (the chain rule within the step)."""
    out = new_basis(basis, basis.shape[1])
    offset, below = 0, None
    for jacobian in jacobians:
        rows = slice(offset, offset + jacobian.state_size)
        jacobian.apply(out[:, rows], state_basis=basis[:, rows], input_basis=below)
        below = out[:, offset:offset + jacobian.p.hidden_size]  # h' comes first in every layer's block
        offset += jacobian.state_size
    return out


def stack_jacobian(layers: list[CellParams], states: State, x: torch.Tensor,
                   mode: str = "hc") -> tuple[State, torch.Tensor]:
    """The whole stack's Jacobian, materialised ``(K, n, n)``, state blocks in layer order: rows and
    columns ``[h_1, c_1, h_2, c_2, ...]`` for LSTMs in "hc" mode, ``[h_1, h_2, ...]`` otherwise.

    Block lower triangular: layer ``l``'s rows are its diagonal block plus its input block times the
    rows of layer ``l-1``'s new ``h`` (the chain rule through the same step). For inspection and
    tests; the spectrum engine multiplies through the blocks instead (``times``, ``stack_times``).
    """
    new_states, jacobians = stack_step(layers, states, x, mode)
    n = sum(jacobian.state_size for jacobian in jacobians)
    matrix = x.new_zeros(x.shape[0], n, n)
    offset, below = 0, None  # below: the rows of the previous layer's new h, (K, H_{l-1}, n)
    for jacobian in jacobians:
        size = jacobian.state_size
        rows = matrix[:, offset:offset + size]
        rows[:, :, offset:offset + size] = jacobian.state_matrix()
        if below is not None:
            rows += torch.bmm(jacobian.input_matrix(), below)
        below = rows[:, :jacobian.p.hidden_size]  # h' comes first in every layer's block
        offset += size
    return new_states, matrix


def initial_states(layers: list[CellParams], batch: int, like: torch.Tensor) -> State:
    """Zero ``(h, c)`` per layer; ``c`` is None for cells whose state is ``h`` alone."""
    return [(like.new_zeros(batch, p.hidden_size),
             like.new_zeros(batch, p.hidden_size) if CELLS[p.cell].state_tensors > 1 else None) for p in layers]
