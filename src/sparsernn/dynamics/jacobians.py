"""One step of a recurrent stack and its Jacobian applied to a basis, in closed form, batched.

The state of a stack is the concatenation over layers of each layer's state: ``(h, c)`` per LSTM
layer in ``"hc"`` mode (the true dynamical state), ``h`` per layer in ``"h"`` mode (``c_{t-1}`` held
fixed inside the step — what the public hyperpruning/Lyapunov code computes), ``h`` for GRU/RNN.
Layer ``l`` reads layer ``l-1``'s *new* ``h`` in the same step, so the Jacobian is block lower
triangular. ``step_jq`` pushes a basis ``Q`` through ``J`` (``J @ Q``, never its transpose) using the
gate matrices directly: ``J`` is never materialised, no autograd, no per-sample loop.

Everything here is pure: tensors in, tensors out. Shapes: ``K`` samples, ``k`` basis columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparsernn.models.stack import RecurrentLayer


@dataclass(frozen=True)
class CellParams:
    """One layer's weights: ``w_ih (G*H, I)``, ``w_hh (G*H, H)``, combined bias ``(G*H,)``; GRU keeps
    ``b_hh`` apart because its candidate gate multiplies ``r`` into ``W_hn h + b_hn``."""

    cell: str
    w_ih: torch.Tensor
    w_hh: torch.Tensor
    b_ih: torch.Tensor
    b_hh: torch.Tensor

    @property
    def hidden_size(self) -> int:
        return self.w_hh.shape[1]


def stack_params(model: nn.Module, dtype: torch.dtype | None = None) -> list[CellParams]:
    """The weights of every layer ``model.recurrent_stack()`` describes, cast to ``dtype``."""
    params = []
    for layer in model.recurrent_stack():
        module = model.get_submodule(layer.module)
        if layer.bidirectional:
            raise ValueError(f"{layer.module}: a bidirectional layer is not a forward dynamical system")
        hidden = layer.hidden_size
        gates = len(layer.gates)

        def get(name: str, rows: int, cols: int | None = None) -> torch.Tensor:
            value = getattr(module, name, None)
            if value is None:
                shape = (rows,) if cols is None else (rows, cols)
                return torch.zeros(shape, dtype=dtype or module.weight_hh_l0.dtype, device=module.weight_hh_l0.device)
            return value.detach().to(dtype=dtype or value.dtype)

        params.append(CellParams(
            cell=layer.cell,
            w_ih=get("weight_ih_l0", gates * hidden, layer.input_size),
            w_hh=get("weight_hh_l0", gates * hidden, hidden),
            b_ih=get("bias_ih_l0", gates * hidden),
            b_hh=get("bias_hh_l0", gates * hidden),
        ))
    return params


def state_sizes(layers: list[CellParams] | tuple[RecurrentLayer, ...], mode: str) -> list[int]:
    """Size of each layer's block of the state vector."""
    sizes = []
    for layer in layers:
        hidden = layer.hidden_size
        sizes.append(2 * hidden if layer.cell == "lstm" and mode == "hc" else hidden)
    return sizes


def _matmul(weight: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``weight (R, C) @ basis (K, C, k) -> (K, R, k)``: one batched GEMM, contiguous output."""
    return torch.matmul(weight, basis)


def cell_step_jq(
    p: CellParams,
    h: torch.Tensor,
    c: torch.Tensor | None,
    x: torch.Tensor,
    dh: torch.Tensor,
    dc: torch.Tensor | None,
    dx: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Advance one layer and push tangents through it.

    ``h, c (K, H)``, ``x (K, I)``; tangents ``dh, dc (K, H, k)`` of the old state and ``dx (K, I, k)`` of the
    input (``None`` = zero). ``dc=None`` for an LSTM means ``c_{t-1}`` is held fixed ("h" mode).
    Returns ``(h', c', dh', dc')``.
    """
    H = p.hidden_size
    pre = x @ p.w_ih.T + p.b_ih + h @ p.w_hh.T
    dpre_h = _matmul(p.w_hh, dh)
    dpre_x = _matmul(p.w_ih, dx) if dx is not None else None

    if p.cell == "lstm":
        pre = pre + p.b_hh
        dpre = dpre_h if dpre_x is None else dpre_h + dpre_x
        i, f, g, o = pre.split(H, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        tanh_c = torch.tanh(c_new)
        h_new = o * tanh_c
        di, df, dg, do = dpre.split(H, dim=1)
        # d c' = f dc + c df + i dg + g di, each gate derivative through its nonlinearity; in place,
        # because these (K, H, k) tensors are the bulk of the memory traffic
        dc_new = df.mul((c * f * (1 - f)).unsqueeze(2))
        dc_new.addcmul_(dg, (i * (1 - g * g)).unsqueeze(2))
        dc_new.addcmul_(di, (g * i * (1 - i)).unsqueeze(2))
        if dc is not None:
            dc_new.addcmul_(dc, f.unsqueeze(2))
        dh_new = dc_new.mul((o * (1 - tanh_c * tanh_c)).unsqueeze(2))
        dh_new.addcmul_(do, (tanh_c * o * (1 - o)).unsqueeze(2))
        return h_new, c_new, dh_new, dc_new

    if p.cell == "gru":
        # PyTorch's GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h' = (1 - z) n + z h
        gi = x @ p.w_ih.T + p.b_ih
        gh = h @ p.w_hh.T + p.b_hh
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        hn = gh[:, 2 * H:]
        n = torch.tanh(gi[:, 2 * H:] + r * hn)
        dr = dpre_h[:, :H] + (dpre_x[:, :H] if dpre_x is not None else 0)
        dz = dpre_h[:, H:2 * H] + (dpre_x[:, H:2 * H] if dpre_x is not None else 0)
        dr = (r * (1 - r)).unsqueeze(2) * dr
        dz = (z * (1 - z)).unsqueeze(2) * dz
        dn_pre = r.unsqueeze(2) * dpre_h[:, 2 * H:] + hn.unsqueeze(2) * dr
        if dpre_x is not None:
            dn_pre = dn_pre + dpre_x[:, 2 * H:]
        dn = (1 - n * n).unsqueeze(2) * dn_pre
        h_new = (1 - z) * n + z * h
        dh_new = (1 - z).unsqueeze(2) * dn + (h - n).unsqueeze(2) * dz + z.unsqueeze(2) * dh
        return h_new, None, dh_new, None

    pre = pre + p.b_hh
    dpre = dpre_h if dpre_x is None else dpre_h + dpre_x
    if p.cell == "rnn_tanh":
        h_new = torch.tanh(pre)
        return h_new, None, (1 - h_new * h_new).unsqueeze(2) * dpre, None
    if p.cell == "rnn_relu":
        return torch.relu(pre), None, (pre > 0).to(pre.dtype).unsqueeze(2) * dpre, None
    raise ValueError(f"unknown cell {p.cell!r}")


def stack_step_jq(
    layers: list[CellParams],
    states: list[tuple[torch.Tensor, torch.Tensor | None]],
    x: torch.Tensor,
    basis: torch.Tensor,
    mode: str = "hc",
) -> tuple[list[tuple[torch.Tensor, torch.Tensor | None]], torch.Tensor]:
    """One step of the whole stack: new per-layer states and ``J @ basis`` for ``basis (K, n, k)``.

    Row blocks of the basis follow ``state_sizes(layers, mode)``: ``[h_1, c_1, h_2, c_2, ...]`` for
    LSTMs in "hc" mode, ``[h_1, h_2, ...]`` otherwise.
    """
    new_states, blocks = [], []
    offset = 0
    dx = None  # the token input is fixed: no tangent enters layer 0
    for p, (h, c) in zip(layers, states):
        H = p.hidden_size
        dh = basis[:, offset:offset + H]
        offset += H
        dc = None
        if p.cell == "lstm" and mode == "hc":
            dc = basis[:, offset:offset + H]
            offset += H
        h_new, c_new, dh_new, dc_new = cell_step_jq(p, h, c, x, dh, dc, dx)
        new_states.append((h_new, c_new))
        blocks.append(dh_new)
        if p.cell == "lstm" and mode == "hc":
            blocks.append(dc_new)
        x, dx = h_new, dh_new
    return new_states, torch.cat(blocks, dim=1)


def initial_states(layers: list[CellParams], batch: int, like: torch.Tensor):
    return [(like.new_zeros(batch, p.hidden_size), like.new_zeros(batch, p.hidden_size) if p.cell == "lstm" else None)
            for p in layers]
