"""The GRU cell (PyTorch's convention: gates r, z, n; ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``)."""

from __future__ import annotations

import torch
from torch import nn

from sparsernn.models.cells.base import CELLS, Cell, CellJacobian, CellParams, bmm_into, gate_sum


class GRUJacobian(CellJacobian):
    """Jacobian of one step of PyTorch's GRU, ``h' = (1 - z) n + z h``::

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
            products.append((gate_sum(self.state_coefficients, self.p.w_hh), state_basis))
        if input_basis is not None:
            products.append((self.input_matrix(), input_basis))
        return bmm_into(out, products, state_basis is not None)

    def state_matrix(self) -> torch.Tensor:
        matrix = gate_sum(self.state_coefficients, self.p.w_hh)
        matrix.diagonal(dim1=1, dim2=2).add_(self.update)
        return matrix

    def input_matrix(self) -> torch.Tensor:
        return gate_sum(self.input_coefficients, self.p.w_ih)


class GRU(Cell):
    name = "gru"
    description = "gated recurrent unit (Cho et al. 2014), PyTorch's form: gates r, z, n; state h"
    gates = ("r", "z", "n")

    def describes(self, module: nn.Module) -> bool:
        return isinstance(module, nn.GRU)

    def module(self, input_size: int, hidden_size: int, bidirectional: bool = False, config=None,
               layer: int = 0) -> nn.Module:
        return nn.GRU(input_size, hidden_size, bidirectional=bidirectional)

    def step(self, p, h, c, x, mode="hc"):
        H = p.hidden_size
        gi = torch.addmm(p.b_ih, x, p.w_ih.T)
        gh = torch.addmm(p.b_hh, h, p.w_hh.T)
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


CELLS.register(GRU())
