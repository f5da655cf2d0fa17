"""One step of a recurrent stack and its Jacobian, in closed form, batched over K samples.

The state of layer ``l`` is ``(h, c)`` for an LSTM in ``"hc"`` mode (the true dynamical state), ``h``
in ``"h"`` mode (``c_{t-1}`` held fixed inside the step — what the public hyperpruning/Lyapunov code
computes) and ``h`` for GRU/RNN. Layer ``l`` reads layer ``l-1``'s *new* ``h`` in the same step, so
the stack's Jacobian is block lower triangular: each layer has a diagonal block (its new state with
respect to its old one) and an input block (with respect to the new ``h`` below it).

Each cell's Jacobian is kept as the gate-derivative vectors of the step plus the shared weight
matrices, never as the full ``n x n`` matrix. ``times(basis)`` pushes a basis through the diagonal
block (``J @ Q``, never its transpose): the LSTM's ``c`` columns are diagonal, and its three ``c'``
gates are folded into one ``H x H`` matrix per sample (the ``o`` gate stays a shared GEMM), so a
step costs ``2 H^2 k`` multiply-adds per sample instead of the ``4 H^2 k`` of ``W_hh @ Q``.

Everything here is pure: tensors in, tensors out. Shapes: ``K`` samples, ``H`` hidden units,
``k`` basis columns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from sparsernn.models.stack import RecurrentLayer


@dataclass(frozen=True)
class CellParams:
    """One layer's weights: ``w_ih (G*H, I)``, ``w_hh (G*H, H)`` and the two biases ``(G*H,)`` (GRU's
    candidate gate multiplies ``r`` into ``W_hn h + b_hn``, so they are kept apart)."""

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


def _gate_sum(coefficients: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum_g diag(coefficients[:, g]) @ W_g`` for the gate blocks ``W_g`` stacked in ``weight``.

    ``coefficients (K, G, H)``, ``weight (G*H, C)`` -> ``(K, H, C)``: one pass per gate, in place
    (an einsum here batches over the H rows and is several times slower on CPU).
    """
    blocks = weight.view(coefficients.shape[1], coefficients.shape[2], -1)
    total = coefficients[:, 0].unsqueeze(-1) * blocks[0]
    for gate in range(1, len(blocks)):
        total.addcmul_(coefficients[:, gate].unsqueeze(-1), blocks[gate])
    return total


def _rows(scale: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``diag(scale) @ matrix`` for ``scale (K, H)``, batched."""
    return scale.unsqueeze(-1) * matrix


def new_basis(like: torch.Tensor, rows: int) -> torch.Tensor:
    """An empty ``(K, rows, k)`` basis laid out column-major, as LAPACK's QR wants its input (saves
    the transposing copy ``geqrf`` otherwise makes; the products write into it just as fast)."""
    return like.new_empty(like.shape[0], like.shape[2], rows).mT


def _bmm_into(out: torch.Tensor, products: list[tuple[torch.Tensor, torch.Tensor]], accumulate: bool) -> torch.Tensor:
    """``out (+)= sum(a @ b)`` over ``products``, batched, written in place (``out`` may be a view of
    a larger basis: no temporaries, no concatenation)."""
    for a, b in products:
        if a.dim() == 2:
            a = a.expand(b.shape[0], -1, -1)
        if accumulate:
            out.baddbmm_(a, b)
        else:
            torch.bmm(a, b, out=out)
            accumulate = True
    return out


class _CellJacobian(ABC):
    """The Jacobian of one layer's step, held as gate-derivative vectors and the shared weights.

    ``apply(out, state_basis, input_basis)`` writes ``J_state @ state_basis + J_input @ input_basis``
    into ``out (K, S, k)``; ``state_matrix()`` / ``input_matrix()`` materialise the blocks (tests,
    inspection).
    """

    p: CellParams
    state_size: int

    @abstractmethod
    def apply(self, out: torch.Tensor, state_basis: torch.Tensor | None = None,
              input_basis: torch.Tensor | None = None) -> torch.Tensor: ...

    @abstractmethod
    def state_matrix(self) -> torch.Tensor:
        """The diagonal block, materialised: ``(K, S, S)``."""

    @abstractmethod
    def input_matrix(self) -> torch.Tensor:
        """The input block, materialised: ``(K, S, I)``."""

    def times(self, basis: torch.Tensor) -> torch.Tensor:
        """The diagonal block (new state w.r.t. old state) times ``basis (K, S, k)``."""
        return self.apply(new_basis(basis, self.state_size), state_basis=basis)


class LSTMJacobian(_CellJacobian):
    """Jacobian of one LSTM step. Written out::

        dc' = diag(g i(1-i)) dpre_i + diag(c f(1-f)) dpre_f + diag(i (1-g^2)) dpre_g + diag(f) dc
        dh' = diag(o (1 - tanh^2 c')) dc' + diag(tanh(c') o(1-o)) dpre_o

    ``dpre = W_hh dh + W_ih dx``. Rows are ``[h'; c']`` in "hc" mode, ``h'`` in "h" mode (``dc = 0``);
    state columns ``[h; c]`` ("hc") or ``h``. The three ``c'`` gates fold into one ``H x H`` matrix
    per sample (``_gate_sum``); the ``o`` gate stays a product with the shared ``W_o``.
    """

    def __init__(self, p: CellParams, gate_coefficients: torch.Tensor, through_c: torch.Tensor,
                 forget: torch.Tensor, mode: str):
        self.p, self.mode = p, mode
        self.state_size = 2 * p.hidden_size if mode == "hc" else p.hidden_size
        self.gates = gate_coefficients  # (K, 4, H): the i, f, g terms of dc'; the o term of dh'
        self.through_c = through_c  # (K, H): dh'/dc'
        self.forget = forget  # (K, H): dc'/dc

    def apply(self, out, state_basis=None, input_basis=None):
        H = self.p.hidden_size
        pushed = [(w, d) for w, d in ((self.p.w_hh, None if state_basis is None else state_basis[:, :H]),
                                      (self.p.w_ih, input_basis)) if d is not None]
        h_rows = out[:, :H]
        c_rows = out[:, H:] if self.mode == "hc" else torch.empty_like(h_rows)  # "h": dc' is a temporary
        carried = self.mode == "hc" and state_basis is not None
        if carried:
            torch.mul(state_basis[:, H:], self.forget.unsqueeze(-1), out=c_rows)
        _bmm_into(c_rows, [(_gate_sum(self.gates[:, :3], w[:3 * H]), d) for w, d in pushed], carried)
        _bmm_into(h_rows, [(w[3 * H:], d) for w, d in pushed], False)
        h_rows.mul_(self.gates[:, 3].unsqueeze(-1)).addcmul_(c_rows, self.through_c.unsqueeze(-1))
        return out

    def _rows_for(self, weight: torch.Tensor) -> torch.Tensor:
        """The dense rows ``[dh'; dc']`` (or ``dh'``) with respect to ``d`` in ``dpre = weight @ d``."""
        H = self.p.hidden_size
        dc = _gate_sum(self.gates[:, :3], weight[:3 * H])
        dh = _rows(self.through_c, dc) + _rows(self.gates[:, 3], weight[3 * H:])
        return torch.cat([dh, dc], 1) if self.mode == "hc" else dh

    def state_matrix(self) -> torch.Tensor:
        dense = self._rows_for(self.p.w_hh)
        if self.mode == "h":
            return dense
        through_old_c = torch.cat([torch.diag_embed(self.through_c * self.forget), torch.diag_embed(self.forget)], 1)
        return torch.cat([dense, through_old_c], 2)

    def input_matrix(self) -> torch.Tensor:
        return self._rows_for(self.p.w_ih)


class GRUJacobian(_CellJacobian):
    """Jacobian of one step of PyTorch's GRU: ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``,
    ``h' = (1 - z) n + z h``::

        dh' = diag((1-z)(1-n^2)) [dpre_n' + diag(hn r(1-r)) dpre_r] + diag((h-n) z(1-z)) dpre_z + diag(z) dh

    where ``dpre_n' = diag(r) W_hn dh`` for the state (``r`` gates only the recurrent part) and
    ``W_in dx`` for the input.
    """

    def __init__(self, p: CellParams, state_coefficients: torch.Tensor, input_coefficients: torch.Tensor,
                 update: torch.Tensor):
        self.p, self.state_size = p, p.hidden_size
        self.state_coefficients = state_coefficients  # (K, 3, H): r, z, n terms w.r.t. h
        self.input_coefficients = input_coefficients  # (K, 3, H): the same w.r.t. x
        self.update = update  # (K, H): z, the direct path h -> h'

    def apply(self, out, state_basis=None, input_basis=None):
        products = []
        if state_basis is not None:
            torch.mul(state_basis, self.update.unsqueeze(-1), out=out)
            products.append((_gate_sum(self.state_coefficients, self.p.w_hh), state_basis))
        if input_basis is not None:
            products.append((self.input_matrix(), input_basis))
        return _bmm_into(out, products, state_basis is not None)

    def state_matrix(self) -> torch.Tensor:
        matrix = _gate_sum(self.state_coefficients, self.p.w_hh)
        matrix.diagonal(dim1=1, dim2=2).add_(self.update)
        return matrix

    def input_matrix(self) -> torch.Tensor:
        return _gate_sum(self.input_coefficients, self.p.w_ih)


class RNNJacobian(_CellJacobian):
    """Jacobian of one Elman step ``h' = phi(W_ih x + W_hh h + b)``: ``dh' = diag(phi') (W_hh dh + W_ih dx)``."""

    def __init__(self, p: CellParams, derivative: torch.Tensor):
        self.p, self.state_size = p, p.hidden_size
        self.derivative = derivative  # (K, H)

    def apply(self, out, state_basis=None, input_basis=None):
        products = [(w, d) for w, d in ((self.p.w_hh, state_basis), (self.p.w_ih, input_basis)) if d is not None]
        return _bmm_into(out, products, False).mul_(self.derivative.unsqueeze(-1))

    def state_matrix(self) -> torch.Tensor:
        return _rows(self.derivative, self.p.w_hh)

    def input_matrix(self) -> torch.Tensor:
        return _rows(self.derivative, self.p.w_ih)


LayerJacobian = LSTMJacobian | GRUJacobian | RNNJacobian


def cell_step(
    p: CellParams, h: torch.Tensor, c: torch.Tensor | None, x: torch.Tensor, mode: str = "hc"
) -> tuple[torch.Tensor, torch.Tensor | None, LayerJacobian]:
    """Advance one layer: ``h, c (K, H)``, ``x (K, I)`` -> ``(h', c', Jacobian of the step)``."""
    H = p.hidden_size
    gi = torch.addmm(p.b_ih, x, p.w_ih.T)
    gh = torch.addmm(p.b_hh, h, p.w_hh.T)
    if p.cell == "lstm":
        i, f, g, o = (gi + gh).split(H, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        tanh_c = torch.tanh(c_new)
        coefficients = torch.stack([g * i * (1 - i), c * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], 1)
        return o * tanh_c, c_new, LSTMJacobian(p, coefficients, o * (1 - tanh_c * tanh_c), f, mode)
    if p.cell == "gru":
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        hn = gh[:, 2 * H:]
        n = torch.tanh(gi[:, 2 * H:] + r * hn)
        through_n = (1 - z) * (1 - n * n)
        through_r = through_n * hn * r * (1 - r)
        through_z = (h - n) * z * (1 - z)
        jacobian = GRUJacobian(p, torch.stack([through_r, through_z, through_n * r], 1),
                               torch.stack([through_r, through_z, through_n], 1), z)
        return (1 - z) * n + z * h, None, jacobian
    pre = gi + gh
    if p.cell == "rnn_tanh":
        h_new = torch.tanh(pre)
        return h_new, None, RNNJacobian(p, 1 - h_new * h_new)
    if p.cell == "rnn_relu":
        return torch.relu(pre), None, RNNJacobian(p, (pre > 0).to(pre.dtype))
    raise ValueError(f"unknown cell {p.cell!r}")


State = list[tuple[torch.Tensor, torch.Tensor | None]]


def stack_step(layers: list[CellParams], states: State, x: torch.Tensor,
               mode: str = "hc") -> tuple[State, list[LayerJacobian]]:
    """One step of the whole stack: the new per-layer states and each layer's Jacobian."""
    new_states, jacobians = [], []
    for p, (h, c) in zip(layers, states):
        h, c, jacobian = cell_step(p, h, c, x, mode)
        new_states.append((h, c))
        jacobians.append(jacobian)
        x = h
    return new_states, jacobians


def stack_times(jacobians: list[LayerJacobian], basis: torch.Tensor) -> torch.Tensor:
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
    return [(like.new_zeros(batch, p.hidden_size), like.new_zeros(batch, p.hidden_size) if p.cell == "lstm" else None)
            for p in layers]
