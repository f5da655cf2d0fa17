"""Elman (vanilla) RNN cells: ``h' = phi(W_ih x + W_hh h + b)`` with phi tanh or ReLU."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sparsernn.models.cells.base import CELLS, Cell, CellJacobian, CellParams, bmm_into, scale_rows


class RNNJacobian(CellJacobian):
    """Jacobian of one Elman step: ``dh' = diag(phi') (W_hh dh + W_ih dx)``."""

    def __init__(self, p: CellParams, derivative: torch.Tensor):
        self.p, self.state_size = p, p.hidden_size
        self.derivative = derivative  # (K, H)

    def apply(self, out, state_basis=None, input_basis=None):
        products = [(w, d) for w, d in ((self.p.w_hh, state_basis), (self.p.w_ih, input_basis)) if d is not None]
        return bmm_into(out, products, False).mul_(self.derivative.unsqueeze(-1))

    def state_matrix(self) -> torch.Tensor:
        return scale_rows(self.derivative, self.p.w_hh)

    def input_matrix(self) -> torch.Tensor:
        return scale_rows(self.derivative, self.p.w_ih)


class ElmanRNN(Cell):
    """``activation(pre) -> (h', phi'(pre))`` is all that differs between the tanh and ReLU cells."""

    gates = ("h",)

    def __init__(self, nonlinearity: str, description: str,
                 activation: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.nonlinearity = nonlinearity
        self.name = f"rnn_{nonlinearity}"
        self.description = description
        self.activation = activation

    def describes(self, module: nn.Module) -> bool:
        return isinstance(module, nn.RNN) and module.nonlinearity == self.nonlinearity

    def module(self, input_size: int, hidden_size: int, bidirectional: bool = False, config=None,
               layer: int = 0) -> nn.Module:
        return nn.RNN(input_size, hidden_size, nonlinearity=self.nonlinearity, bidirectional=bidirectional)

    def step(self, p, h, c, x, mode="hc"):
        h_new, derivative = self.activation(torch.addmm(p.b_ih, x, p.w_ih.T) + torch.addmm(p.b_hh, h, p.w_hh.T))
        return h_new, None, RNNJacobian(p, derivative)


def _tanh(pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = torch.tanh(pre)
    return h, 1 - h * h


def _relu(pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.relu(pre), (pre > 0).to(pre.dtype)


CELLS.register(ElmanRNN("tanh", "Elman RNN with tanh; state h", _tanh))
CELLS.register(ElmanRNN("relu", "Elman RNN with ReLU; state h", _relu))
