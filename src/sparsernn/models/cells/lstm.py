"""The LSTM cell (PyTorch's gate order i, f, g, o; state (h, c))."""

from __future__ import annotations

import torch
from torch import nn

from sparsernn.models.cells.base import CELLS, Cell, CellJacobian, CellParams, bmm_into, gate_sum, scale_rows


def lstm_activations(gates: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, ...]:
    """The gates ``(sigmoid(i), sigmoid(f), tanh(g), sigmoid(o))`` from their pre-activations
    ``W_ih x + W_hh h + b`` (i, f, g, o blocks along ``dim``)."""
    i, f, g, o = gates.chunk(4, dim=dim)
    return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)


def lstm_combine(i, f, g, o, c):
    """``c' = f c + i g``, ``h' = o tanh(c')`` from activated gates: ``(h', c', tanh(c'))``."""
    c_new = f * c + i * g
    tanh_c = torch.tanh(c_new)
    return o * tanh_c, c_new, tanh_c


def lstm_update(gates: torch.Tensor, c: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from its gate pre-activations: ``(h', c')``. With ``lstm_activations`` and
    ``lstm_combine``, the one written-out LSTM step (closed-form Jacobians, the reference
    implementations in benchmarks and tests)."""
    h_new, c_new, _ = lstm_combine(*lstm_activations(gates, dim), c)
    return h_new, c_new


class LSTMJacobian(CellJacobian):
    """Jacobian of one LSTM step. Written out::

        dc' = diag(g i(1-i)) dpre_i + diag(c f(1-f)) dpre_f + diag(i (1-g^2)) dpre_g + diag(f) dc
        dh' = diag(o (1 - tanh^2 c')) dc' + diag(tanh(c') o(1-o)) dpre_o

    ``dpre = W_hh dh + W_ih dx``. Rows are ``[h'; c']`` in "hc" mode, ``h'`` in "h" mode (``dc = 0``);
    state columns ``[h; c]`` ("hc") or ``h``. The three ``c'`` gates fold into one ``H x H`` matrix
    per sample (``gate_sum``); the ``o`` gate stays a product with the shared ``W_o``, so a step costs
    ``2 H^2 k`` multiply-adds per sample instead of the ``4 H^2 k`` of ``W_hh @ Q``.
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
        bmm_into(c_rows, [(gate_sum(self.gates[:, :3], w[:3 * H]), d) for w, d in pushed], carried)
        bmm_into(h_rows, [(w[3 * H:], d) for w, d in pushed], False)
        h_rows.mul_(self.gates[:, 3].unsqueeze(-1)).addcmul_(c_rows, self.through_c.unsqueeze(-1))
        return out

    def _rows_for(self, weight: torch.Tensor) -> torch.Tensor:
        """The dense rows ``[dh'; dc']`` (or ``dh'``) with respect to ``d`` in ``dpre = weight @ d``."""
        H = self.p.hidden_size
        dc = gate_sum(self.gates[:, :3], weight[:3 * H])
        dh = scale_rows(self.through_c, dc) + scale_rows(self.gates[:, 3], weight[3 * H:])
        return torch.cat([dh, dc], 1) if self.mode == "hc" else dh

    def state_matrix(self) -> torch.Tensor:
        dense = self._rows_for(self.p.w_hh)
        if self.mode == "h":
            return dense
        through_old_c = torch.cat([torch.diag_embed(self.through_c * self.forget), torch.diag_embed(self.forget)], 1)
        return torch.cat([dense, through_old_c], 2)

    def input_matrix(self) -> torch.Tensor:
        return self._rows_for(self.p.w_ih)


class LSTM(Cell):
    name = "lstm"
    description = "long short-term memory (Hochreiter & Schmidhuber 1997): gates i, f, g, o; state (h, c)"
    gates = ("i", "f", "g", "o")
    state_tensors = 2

    def describes(self, module: nn.Module) -> bool:
        return isinstance(module, nn.LSTM)

    def module(self, input_size: int, hidden_size: int, bidirectional: bool = False, config=None,
               layer: int = 0) -> nn.Module:
        return nn.LSTM(input_size, hidden_size, bidirectional=bidirectional)

    def state_size(self, hidden: int, mode: str = "hc") -> int:
        return 2 * hidden if mode == "hc" else hidden

    def step(self, p, h, c, x, mode="hc"):
        pre = torch.addmm(p.b_ih, x, p.w_ih.T) + torch.addmm(p.b_hh, h, p.w_hh.T)
        i, f, g, o = lstm_activations(pre)
        h_new, c_new, tanh_c = lstm_combine(i, f, g, o, c)
        coefficients = torch.stack([g * i * (1 - i), c * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], 1)
        return h_new, c_new, LSTMJacobian(p, coefficients, o * (1 - tanh_c * tanh_c), f, mode)


CELLS.register(LSTM())
