"""Recurrent Highway Networks (Zilly et al. 2017): ``depth`` micro-layers per time step.

Micro-layer ``l`` of a step maps the state ``s_{l-1}`` (``s_0`` the previous step's output) to::

    h = tanh(W_H x [l = 1] + R_H^l s_{l-1} + b_H^l)          the nonlinear transform
    t = sigmoid(W_T x [l = 1] + R_T^l s_{l-1} + b_T^l)        the transform gate
    s_l = h t + s_{l-1} (1 - t)                               coupled carry (cell ``rhn``)
    s_l = h t + s_{l-1} c,  c = sigmoid(... R_C ...)          uncoupled carry (cell ``rhn_uncoupled``)

The input enters the first micro-layer only; the step's output and new state is ``s_depth``.

Parameters follow PyTorch's fused-RNN layout so every structure-aware part of sparsernn reads them
as it reads an LSTM's: ``weight_ih (G*H, I)`` (gates stacked in rows: H, T[, C]), and per micro-layer
``weight_hh_l (G*H, H)`` and ``bias_hh_l (G*H,)``. ISS component k is then rows k of every matrix and
columns k of every ``weight_hh_l``, as the ISS paper defines it for RHNs.

Speed: the sequence runs in ``RHNSequence``, an autograd function with a hand-written backward. Its
forward keeps no autograd graph and writes every micro-layer's gate values and state straight into
the buffers the backward reads (four operations per coupled micro-layer); its backward runs the
recurrence in reverse with three operations per micro-layer, and computes each weight's gradient as
*one* product over all steps (where autograd makes ``T`` thin ones). The input projection of the
whole window is one product. The plain autograd loop (``rhn_reference``) computes the same numbers
(tests agree to 1e-10 in float64) and is what a layer built with ``fast=False`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from sparsernn.config import ModelConfig
from sparsernn.models.cells.base import CELLS, Cell, CellJacobian, CellParams, new_basis


# ---- the sequence: fast path and reference ---------------------------------------------------------


def _micro_step(pre: torch.Tensor, s: torch.Tensor, hidden: int, coupled: bool):
    h = torch.tanh(pre[:, :hidden])
    t = torch.sigmoid(pre[:, hidden:2 * hidden])
    if coupled:
        return torch.lerp(s, h, t), h, t, None  # s + t (h - s)
    c = torch.sigmoid(pre[:, 2 * hidden:])
    return h * t + s * c, h, t, c


def rhn_reference(xw: torch.Tensor, s: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                  masks: torch.Tensor | None, coupled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence as a plain autograd loop: ``xw (T, B, G*H)`` is the input projection of the
    window, ``s (B, H)`` the state, ``masks (depth, B, H)`` the recurrent-dropout masks or None."""
    hidden, outputs = s.shape[1], []
    for t in range(xw.shape[0]):
        for layer, (weight, bias) in enumerate(zip(weights, biases)):
            pre = F.linear(s if masks is None else s * masks[layer], weight, bias)
            if layer == 0:
                pre = pre + xw[t]
            s = _micro_step(pre, s, hidden, coupled)[0]
        outputs.append(s)
    return torch.stack(outputs), s


def rhn_coefficients(states: torch.Tensor, values: torch.Tensor, coupled: bool, out: torch.Tensor) -> torch.Tensor:
    """The micro-layers' local derivatives, for every step at once (pure elementwise math).

    ``states (N, B, H)`` are the states entering N micro-layers, ``values (N, B, G*H)`` their gate
    values ``h, t (, c)``. Writes ``d s_l / d pre_g`` into ``out (N, B, G*H)`` (coupled:
    ``t (1 - h^2)``, ``(h - s) t (1 - t)``; uncoupled: ``t (1 - h^2)``, ``h t (1 - t)``, ``s c (1 - c)``)
    and returns the carry ``d s_l / d s_{l-1}`` through the highway: ``1 - t`` or ``c``.
    """
    hidden = states.shape[-1]
    h, t = values[..., :hidden], values[..., hidden:2 * hidden]
    torch.mul(t, 1 - h * h, out=out[..., :hidden])
    not_t = 1 - t
    if coupled:
        torch.mul((h - states) * t, not_t, out=out[..., hidden:])
        return not_t
    c = values[..., 2 * hidden:]
    torch.mul(h * t, not_t, out=out[..., hidden:2 * hidden])
    torch.mul(states * c, 1 - c, out=out[..., 2 * hidden:])
    return c


class RHNSequence(torch.autograd.Function):
    """``(xw, s0, masks, coupled, *weights, *biases) -> (outputs (T, B, H), last state (B, H))``.

    Buffers are laid out by micro-layer first: ``states[l, t]`` is the state entering micro-layer ``l``
    of step ``t`` (``states[0, t + 1]`` is step ``t``'s output), ``values[l, t]`` its gate values,
    written straight by the operations that compute them. A coupled micro-layer is then four
    operations forward (a product, tanh, sigmoid, lerp) and three backward, where autograd records
    about twenty, and each weight's gradient is one product over the window that reads the buffers
    as they lie. The derivatives that do not depend on the incoming gradient are computed one step
    at a time before its reverse sweep (a step's worth stays in cache).
    """

    @staticmethod
    def forward(ctx, xw, s0, masks, coupled, *params):
        depth = len(params) // 2
        weights, biases = params[:depth], params[depth:]
        steps, batch, hidden = xw.shape[0], s0.shape[0], s0.shape[1]
        gates = weights[0].shape[0] // hidden
        states = xw.new_empty(depth, steps + 1, batch, hidden)  # [l > 0, steps] is never used
        values = xw.new_empty(depth, steps, batch, gates * hidden)  # h, t (, c) per micro-layer
        states[0, 0] = s0
        h_all, t_all = values[..., :hidden], values[..., hidden:2 * hidden]
        c_all = values[..., 2 * hidden:]
        first = xw + biases[0]  # the first micro-layer's bias joins the input projection once
        transposed = [w.T for w in weights]
        for t in range(steps):
            for layer in range(depth):
                s = states[layer, t]
                read = s if masks is None else s * masks[layer]
                pre = values[layer, t]
                torch.addmm(first[t] if layer == 0 else biases[layer], read, transposed[layer], out=pre)
                h, gate = h_all[layer, t].tanh_(), t_all[layer, t].sigmoid_()
                out = states[layer + 1, t] if layer + 1 < depth else states[0, t + 1]
                if coupled:
                    torch.lerp(s, h, gate, out=out)
                else:
                    torch.addcmul(h * gate, s, c_all[layer, t].sigmoid_(), out=out)
        ctx.coupled, ctx.has_masks = coupled, masks is not None
        ctx.save_for_backward(states, values, masks if masks is not None else xw.new_empty(0), *weights)
        return states[0, 1:].clone(), states[0, steps].clone()

    @staticmethod
    def backward(ctx, grad_outputs, grad_state):
        states, values, masks, *weights = ctx.saved_tensors
        masks = masks if ctx.has_masks else None
        depth, steps, batch, width = values.shape
        hidden = states.shape[-1]
        gates = width // hidden
        entering = states[:, :steps]  # (depth, steps, B, H): what each micro-layer read (before masks)
        grad_pre = torch.empty_like(values)  # holds the local derivatives until ds multiplies them in
        by_gate = grad_pre.view(depth, steps, batch, gates, hidden)
        # the backward product reads W in the layout the forward product reads W^T: faster on CPU kernels
        transposed = [w.T.contiguous().T for w in weights]
        ds = grad_state.clone()  # autograd passes zeros for an output the loss does not use
        for t in reversed(range(steps)):
            ds += grad_outputs[t]
            carry = rhn_coefficients(entering[:, t], values[:, t], ctx.coupled, grad_pre[:, t])
            for layer in reversed(range(depth)):
                dpre = by_gate[layer, t].mul_(ds.unsqueeze(1)).view(batch, width)
                through = dpre @ transposed[layer]
                ds = (through if masks is None else through.mul_(masks[layer])).addcmul_(ds, carry[layer])
        # each weight's gradient is one product over every step of the window, read in place
        read = entering if masks is None else entering * masks.unsqueeze(1)
        flat_pre = grad_pre.view(depth, steps * batch, width)
        grad_weights = torch.bmm(flat_pre.transpose(1, 2), read.reshape(depth, steps * batch, hidden))
        grad_biases = flat_pre.sum(1)
        # the input's gradient is copied out: as a view it would keep all of grad_pre alive in a leaf's .grad
        return (grad_pre[0].clone(), ds, None, None, *grad_weights.unbind(0), *grad_biases.unbind(0))


# ---- the module ------------------------------------------------------------------------------------


class RecurrentHighway(nn.Module):
    """One RHN layer over a sequence: ``x (T, B, I), state (1, B, H) -> (T, B, H), (1, B, H)``."""

    def __init__(self, input_size: int, hidden_size: int, depth: int = 1, coupled: bool = True,
                 transform_bias: float = -2.0, recurrent_dropout: float = 0.0, fast: bool = True) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.depth = input_size, hidden_size, depth
        self.coupled, self.transform_bias = coupled, transform_bias
        self.recurrent_dropout, self.fast = recurrent_dropout, fast
        gates = 2 if coupled else 3
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size))
        for layer in range(depth):
            self.register_parameter(f"weight_hh_{layer}", nn.Parameter(torch.empty(gates * hidden_size, hidden_size)))
            self.register_parameter(f"bias_hh_{layer}", nn.Parameter(torch.empty(gates * hidden_size)))
        bound = hidden_size ** -0.5
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)
        self.finish_init()

    @torch.no_grad()
    def finish_init(self) -> None:
        """The transform gate starts biased towards carrying the state (Zilly et al.: -2 or -4); a model
        calls this again after its own uniform initialisation."""
        for layer in range(self.depth):
            getattr(self, f"bias_hh_{layer}")[self.hidden_size:2 * self.hidden_size].fill_(self.transform_bias)

    def weights(self) -> list[torch.Tensor]:
        return [getattr(self, f"weight_hh_{layer}") for layer in range(self.depth)]

    def biases(self) -> list[torch.Tensor]:
        return [getattr(self, f"bias_hh_{layer}") for layer in range(self.depth)]

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xw = F.linear(x, self.weight_ih)  # the whole window's input projection in one product
        masks = None
        if self.training and self.recurrent_dropout > 0:
            keep = 1.0 - self.recurrent_dropout
            masks = x.new_empty(self.depth, x.shape[1], self.hidden_size).bernoulli_(keep).div_(keep)
        if self.fast:
            weights, biases, s0 = self.weights(), self.biases(), state[0]
            if xw.dtype != weights[0].dtype:  # autocast: the recurrence runs in the projection's dtype
                weights, biases = [w.to(xw.dtype) for w in weights], [b.to(xw.dtype) for b in biases]
                s0, masks = s0.to(xw.dtype), None if masks is None else masks.to(xw.dtype)
            outputs, s = RHNSequence.apply(xw, s0, masks, self.coupled, *weights, *biases)
        else:
            outputs, s = rhn_reference(xw, state[0], self.weights(), self.biases(), masks, self.coupled)
        return outputs, s.unsqueeze(0)

    def extra_repr(self) -> str:
        carry = "coupled" if self.coupled else "uncoupled"
        return f"{self.input_size}, {self.hidden_size}, depth={self.depth}, {carry} carry"


# ---- the cell: structure, step and Jacobian ---------------------------------------------------------


@dataclass(frozen=True)
class RHNParams(CellParams):
    """``w_hh``/``b_hh`` are the first micro-layer's; ``deeper`` holds ``(weight, bias)`` of the rest."""

    deeper: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    coupled: bool = True


class RHNJacobian(CellJacobian):
    """The step's Jacobian as the product through its micro-layers. Micro-layer ``l`` contributes
    ``A_l = sum_g diag(a_g) R_g^l + diag(carry)`` (coupled: ``a_H = t(1-h^2)``, ``a_T = (h-s) t(1-t)``,
    carry ``1-t``; uncoupled: ``a_T = h t(1-t)``, ``a_C = s c(1-c)``, carry ``c``); the input enters
    through the first: ``B = sum_g diag(a_g^1) W_g``. ``J_state = A_d ... A_1``, ``J_input = A_d ... A_2 B``.
    """

    def __init__(self, p: RHNParams, coefficients: list[torch.Tensor], carries: list[torch.Tensor]) -> None:
        self.p, self.state_size = p, p.hidden_size
        self.coefficients, self.carries = coefficients, carries  # per micro-layer: (K, G, H), (K, H)
        self.weights = [p.w_hh, *(w for w, _ in p.deeper)]

    def _through(self, layer: int, pushed: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
        """``sum_g diag(a_g) (pushed)_g + diag(carry) basis`` for ``pushed (K, G*H, k)``."""
        K, G, H = self.coefficients[layer].shape
        blocks = pushed.view(K, G, H, -1) * self.coefficients[layer].unsqueeze(-1)
        total = blocks.sum(1)
        if basis is not None:
            total.addcmul_(self.carries[layer].unsqueeze(-1), basis)
        return total

    def apply(self, out, state_basis=None, input_basis=None):
        pushed = None
        if state_basis is not None:
            pushed = torch.matmul(self.p.w_hh, state_basis)
        if input_basis is not None:
            through_input = torch.matmul(self.p.w_ih, input_basis)
            pushed = through_input if pushed is None else pushed + through_input
        v = self._through(0, pushed, state_basis)
        for layer in range(1, len(self.weights)):
            v = self._through(layer, torch.matmul(self.weights[layer], v), v)
        out.copy_(v)
        return out

    def state_matrix(self) -> torch.Tensor:
        K, H = self.carries[0].shape
        eye = torch.eye(H, dtype=self.carries[0].dtype, device=self.carries[0].device).expand(K, H, H)
        return self.apply(new_basis(eye, H), state_basis=eye)

    def input_matrix(self) -> torch.Tensor:
        K, H = self.carries[0].shape
        I = self.p.w_ih.shape[1]
        eye = torch.eye(I, dtype=self.carries[0].dtype, device=self.carries[0].device).expand(K, I, I)
        return self.apply(self.carries[0].new_empty(K, H, I), input_basis=eye)


class RHNSettings(ModelConfig):
    """The model section of a recurrent highway network: the shared fields and the RHN's own."""

    depth: int = Field(1, gt=0, description="rhn: recurrence depth, micro-layers per time step")
    transform_bias: float = Field(-2.0, description="rhn: initial bias of the transform gate T (negative: carry)")
    recurrent_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="rhn: dropout on the state entering each micro-layer, one mask per sequence")


class RHN(Cell):
    """A recurrent highway layer; ``model.depth`` micro-layers per step."""

    state_tensors = 1
    settings = RHNSettings

    def __init__(self, coupled: bool) -> None:
        self.coupled = coupled
        self.name = "rhn" if coupled else "rhn_uncoupled"
        self.gates = ("h", "t") if coupled else ("h", "t", "c")
        self.description = ("recurrent highway network (Zilly et al. 2017), carry 1 - T; depth model.depth; "
                            "state s" if coupled else "recurrent highway network with its own carry gate C; state s")

    def module(self, input_size: int, hidden_size: int, bidirectional: bool = False, config=None,
               layer: int = 0) -> nn.Module:
        if bidirectional:
            raise ValueError(f"cell {self.name} has no bidirectional form")
        options = {} if config is None else {"depth": config.depth, "transform_bias": config.transform_bias,
                                             "recurrent_dropout": config.recurrent_dropout}
        return RecurrentHighway(input_size, hidden_size, coupled=self.coupled, **options)

    def parameter_roles(self, module: nn.Module) -> dict[str, str]:
        return {name: ("input" if name == "weight_ih" else "recurrent" if name.startswith("weight_hh") else "bias")
                for name, _ in module.named_parameters()}

    def params(self, module: nn.Module, dtype: torch.dtype | None = None, layer: int = 0) -> RHNParams:
        """The micro-layers' weights of a one-layer RHN module (``layer`` is 0)."""
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dtype=dtype or t.dtype)

        weights, biases = module.weights(), module.biases()
        zeros = torch.zeros_like(cast(biases[0]))
        return RHNParams(self.name, cast(module.weight_ih), cast(weights[0]), zeros, cast(biases[0]),
                         tuple((cast(w), cast(b)) for w, b in zip(weights[1:], biases[1:])), self.coupled)

    def step(self, p: RHNParams, h, c, x, mode="hc"):
        hidden, s = p.hidden_size, h
        coefficients, carries = [], []
        layers = [(p.w_hh, p.b_hh), *p.deeper]
        for layer, (weight, bias) in enumerate(layers):
            pre = torch.addmm(bias, s, weight.T)
            if layer == 0:
                pre = pre + x @ p.w_ih.T
            s_new, hh, t, carry = _micro_step(pre, s, hidden, self.coupled)
            if self.coupled:
                coefficients.append(torch.stack([t * (1 - hh * hh), (hh - s) * t * (1 - t)], 1))
                carries.append(1 - t)
            else:
                coefficients.append(torch.stack([t * (1 - hh * hh), hh * t * (1 - t), s * carry * (1 - carry)], 1))
                carries.append(carry)
            s = s_new
        return s, None, RHNJacobian(p, coefficients, carries)


CELLS.register(RHN(coupled=True))
CELLS.register(RHN(coupled=False))
