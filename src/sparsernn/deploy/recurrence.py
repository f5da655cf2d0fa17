"""Export forms of the recurrent layers: the time loop as one node of the exported graph.

An exporter that traces a layer's Python loop over time unrolls it, and the file then holds for the
traced length only. torch.export traces ``nn.LSTM``/``nn.GRU``/``nn.RNN`` through ATen's Python
decomposition, which loops over the sequence (pytorch issue #115092), and an RHN layer loops in Python
itself. Here each layer is rebuilt, for the export only, as the same recurrence over
``torch.ops.higher_order.scan`` (a prototype in torch 2.13), which torch.export keeps as one node of
symbolic length and ``torch.export.load`` runs with PyTorch alone. The TorchScript ONNX exporter has
native LSTM/GRU/RNN operators but none for an RHN: there the RHN's loop is a scripted function, which
that exporter turns into an ONNX ``Loop`` (``onnx_form``). A sparse embedding, whose lookup neither
exporter traces for every input, is exported as the dense table it stands for.

A form reads the layer's own weights (no copy; a block-sparse layer's dense equivalent is built once)
and computes what the layer computes in eval mode; ``export_forms`` swaps the forms in for the length
of a ``with`` block and always puts the layers back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch._higher_order_ops import scan
from torch.nn import functional as F

from sparsernn.models.cells.block_lstm import BlockSparseLSTM, MaskedBlockLSTM
from sparsernn.models.cells.rhn import RecurrentHighway
from sparsernn.models.embedding import SparseEmbedding

Carry = tuple[torch.Tensor, ...]
# one step: (carry, input projection of the step, the direction's recurrent tensors) -> next carry
Step = Callable[[Carry, torch.Tensor, Sequence[torch.Tensor]], Carry]
# a direction's tensors: (input weight, input bias or None, recurrent tensors)
Direction = tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]
# the whole window in a form the TorchScript tracer keeps a loop: (input projection, carry, recurrent tensors)
TracedLoop = Callable[[torch.Tensor, Carry, tuple[torch.Tensor, ...]], tuple[torch.Tensor, Carry]]


# ---- one step of each recurrence, in PyTorch's gate order ------------------------------------------


def lstm_step(carry: Carry, xw: torch.Tensor, recurrent: Sequence[torch.Tensor]) -> Carry:
    """``nn.LSTM``'s equations and gate order (i, f, g, o): the layer's own weights are read as they lie."""
    h, c = carry
    i, f, g, o = (xw + F.linear(h, *recurrent)).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_step(carry: Carry, xw: torch.Tensor, recurrent: Sequence[torch.Tensor]) -> Carry:
    """``nn.GRU``'s equations (r, z, n; the reset gate scales the recurrent part of n only)."""
    (h,) = carry
    x_r, x_z, x_n = xw.chunk(3, 1)
    h_r, h_z, h_n = F.linear(h, *recurrent).chunk(3, 1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (torch.lerp(n, h, z),)  # (1 - z) n + z h


def rnn_step(activation: Callable[[torch.Tensor], torch.Tensor]) -> Step:
    """``nn.RNN``'s step with its nonlinearity (tanh or relu)."""
    def step(carry: Carry, xw: torch.Tensor, recurrent: Sequence[torch.Tensor]) -> Carry:
        return (activation(xw + F.linear(carry[0], *recurrent)),)

    return step


def rhn_step(coupled: bool) -> Step:
    """``recurrent`` is ``(weight_0, bias_0, weight_1, bias_1, ...)``; the input enters micro-layer 0."""
    def step(carry: Carry, xw: torch.Tensor, recurrent: Sequence[torch.Tensor]) -> Carry:
        s, hidden = carry[0], carry[0].shape[1]
        for layer in range(len(recurrent) // 2):
            pre = F.linear(s, recurrent[2 * layer], recurrent[2 * layer + 1])
            pre = pre + xw if layer == 0 else pre
            h, t = torch.tanh(pre[:, :hidden]), torch.sigmoid(pre[:, hidden:2 * hidden])
            s = torch.lerp(s, h, t) if coupled else h * t + s * torch.sigmoid(pre[:, 2 * hidden:])
        return (s,)

    return step


def _rhn_loop(xw: torch.Tensor, s: torch.Tensor, weights: torch.Tensor, biases: torch.Tensor,
              coupled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``rhn_step`` over the window, in the TorchScript subset: the exporter makes the loop an ONNX
    ``Loop`` (``weights (depth, G*H, H)``, ``biases (depth, G*H)``)."""
    hidden = s.shape[1]
    outputs = []
    for t in range(xw.shape[0]):
        for layer in range(weights.shape[0]):
            pre = torch.matmul(s, weights[layer].t()) + biases[layer]
            if layer == 0:
                pre = pre + xw[t]
            h, gate = torch.tanh(pre[:, :hidden]), torch.sigmoid(pre[:, hidden:2 * hidden])
            if coupled:
                s = s + gate * (h - s)
            else:
                s = h * gate + s * torch.sigmoid(pre[:, 2 * hidden:])
        outputs.append(s)
    return torch.stack(outputs), s


@functools.cache
def scripted_rhn_loop() -> torch.jit.ScriptFunction:
    """Compiled on first use, not at import: only an ONNX export of an RHN needs it."""
    return torch.jit.script(_rhn_loop)


def traced_rhn_loop(coupled: bool) -> TracedLoop:
    """The RHN window as a call of the scripted loop (weights and biases stacked by micro-layer)."""
    def run(xw: torch.Tensor, carry: Carry, recurrent: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, Carry]:
        out, last = scripted_rhn_loop()(xw, carry[0], torch.stack(recurrent[0::2]), torch.stack(recurrent[1::2]),
                                        coupled)
        return out, (last,)

    return run


# ---- the layer form ---------------------------------------------------------------------------------


class ScannedLayer(nn.Module):
    """A single-layer recurrence, ``x (T, B, I), state (D, B, H) or (h, c), or None -> (T, B, D*H), state``
    as ``nn.LSTM`` calls it; direction 1 (if any) runs backwards, as a bidirectional layer's does.

    The loop is a ``scan``; while the TorchScript tracer runs (the ONNX exporter) it is ``traced``
    instead, where one is given: the tracer would unroll a scan's loop too.
    """

    def __init__(self, step: Step, directions: list[Direction], hidden_size: int, parts: int,
                 traced: TracedLoop | None = None) -> None:
        super().__init__()
        self.step, self.hidden_size, self.parts, self.traced = step, hidden_size, parts, traced
        self.input_size = directions[0][0].shape[1]
        self.shapes: list[tuple[bool, int]] = []  # per direction: has an input bias, how many recurrent tensors
        for d, (w_ih, b_ih, recurrent) in enumerate(directions):
            # buffers, not attributes: torch.export lifts them as the program's constants
            for name, tensor in (("w_ih", w_ih), ("b_ih", b_ih), *((f"r{k}", r) for k, r in enumerate(recurrent))):
                if tensor is not None:
                    self.register_buffer(f"d{d}_{name}", tensor.detach(), persistent=False)
            self.shapes.append((b_ih is not None, len(recurrent)))

    def direction(self, d: int) -> Direction:
        has_bias, count = self.shapes[d]
        bias = getattr(self, f"d{d}_b_ih") if has_bias else None
        return getattr(self, f"d{d}_w_ih"), bias, tuple(getattr(self, f"d{d}_r{k}") for k in range(count))

    def forward(self, x: torch.Tensor,
                state: torch.Tensor | Carry | None = None) -> tuple[torch.Tensor, torch.Tensor | Carry]:
        if state is None:
            zeros = x.new_zeros(len(self.shapes), x.shape[1], self.hidden_size)
            state = (zeros,) * self.parts
        states = state if isinstance(state, tuple) else (state,)
        outputs, finals = [], []
        for d in range(len(self.shapes)):
            w_ih, b_ih, recurrent = self.direction(d)
            out, final = self._run(F.linear(x, w_ih, b_ih), tuple(s[d] for s in states), recurrent, d == 1)
            outputs.append(out)
            finals.append(final)
        new = tuple(torch.stack([f[p] for f in finals]) for p in range(self.parts))
        return (torch.cat(outputs, -1) if len(outputs) > 1 else outputs[0]), (new if self.parts > 1 else new[0])

    def _run(self, xw: torch.Tensor, carry: Carry, recurrent: tuple[torch.Tensor, ...],
             reverse: bool) -> tuple[torch.Tensor, Carry]:
        if self.traced is not None and not reverse and torch.jit.is_tracing():
            return self.traced(xw, carry, recurrent)

        def combine(previous: Carry, xw_t: torch.Tensor) -> tuple[Carry, torch.Tensor]:
            following = self.step(previous, xw_t, recurrent)
            return following, following[0].clone()  # scan forbids an output aliasing the carry

        final, out = scan(combine, carry, xw, reverse=reverse)
        return out, final

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, directions={len(self.shapes)}"


# ---- which layers have a form, and swapping them in ---------------------------------------------------


def _fused_directions(module: nn.Module, weights: dict[str, torch.Tensor] | None = None) -> list[Direction]:
    """The directions of a one-layer ``nn.LSTM``/``GRU``/``RNN`` (or of ``weights`` in its names)."""
    weights = dict(module.named_parameters()) if weights is None else weights
    suffixes = ["_l0", "_l0_reverse"][:2 if getattr(module, "bidirectional", False) else 1]
    # a layer built with bias=False has no biases: F.linear then takes the weight alone
    return [(weights[f"weight_ih{s}"], weights.get(f"bias_ih{s}"),
             tuple(t for t in (weights[f"weight_hh{s}"], weights.get(f"bias_hh{s}")) if t is not None))
            for s in suffixes]


def _fused_form(module: nn.RNNBase) -> ScannedLayer:
    if module.num_layers != 1 or module.proj_size or module.batch_first:
        raise ValueError(f"{type(module).__name__} with num_layers={module.num_layers}, proj_size={module.proj_size}, "
                         f"batch_first={module.batch_first}: only one-layer, sequence-first layers have an export form")
    if isinstance(module, nn.LSTM):
        step, parts = lstm_step, 2
    elif isinstance(module, nn.GRU):
        step, parts = gru_step, 1
    else:
        step, parts = rnn_step(torch.tanh if module.nonlinearity == "tanh" else torch.relu), 1
    return ScannedLayer(step, _fused_directions(module), module.hidden_size, parts)


@torch.no_grad()
def scanned_form(module: nn.Module) -> ScannedLayer | None:
    """The scan form of a recurrent layer the toolkit builds; None for any other module."""
    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        return _fused_form(module)
    if isinstance(module, RecurrentHighway):
        return rhn_form(module)
    if isinstance(module, BlockSparseLSTM):  # the dense equivalent: zeros outside the blocks
        return ScannedLayer(lstm_step, _fused_directions(module, module.dense_weights()), module.hidden_size, 2)
    if isinstance(module, MaskedBlockLSTM):
        return ScannedLayer(lstm_step, _fused_directions(module, _masked_weights(module)), module.hidden_size, 2)
    return None


def _masked_weights(module: MaskedBlockLSTM) -> dict[str, torch.Tensor]:
    """The weights a masked block LSTM's forward passes its LSTM: zeros outside the blocks."""
    weights = dict(module.lstm.named_parameters())
    return {**weights, "weight_ih_l0": weights["weight_ih_l0"] * module.block_ih,
            "weight_hh_l0": weights["weight_hh_l0"] * module.block_hh}


def rhn_form(module: nn.Module) -> ScannedLayer | None:
    """An RHN layer's form (scan for torch.export, a scripted loop when traced); None for any other."""
    if not isinstance(module, RecurrentHighway):
        return None
    recurrent = tuple(t for pair in zip(module.weights(), module.biases()) for t in pair)
    return ScannedLayer(rhn_step(module.coupled), [(module.weight_ih, None, recurrent)], module.hidden_size, 1,
                        traced=traced_rhn_loop(module.coupled))


@torch.no_grad()
def dense_embedding_form(module: nn.Module) -> nn.Embedding | None:
    """A sparse embedding as the dense table it stands for (zeros outside each word's length); None for
    any other module. Its own lookup fills rows by word-length blocks, with data-dependent masks that
    torch.export cannot trace and the TorchScript tracer fixes to the example's words."""
    if not isinstance(module, SparseEmbedding):
        return None
    return nn.Embedding.from_pretrained(module.dense_weight(), freeze=True)


def torch_export_form(module: nn.Module) -> nn.Module | None:
    """What torch.export runs in place of ``module``: its scan form, or its dense table; None: itself."""
    form = scanned_form(module)
    return form if form is not None else dense_embedding_form(module)


@torch.no_grad()
def onnx_form(module: nn.Module) -> nn.Module | None:
    """The form of a layer the TorchScript ONNX exporter cannot take as it is; None for the others.

    An RHN's loop would be unrolled (its form scripts it); a masked block LSTM calls its LSTM through
    ``functional_call``, which tracing refuses (its form is a plain ``nn.LSTM`` holding the masked
    weights, exported as the ONNX LSTM operator with the zeros in its matrices); a sparse embedding
    becomes its dense table.
    """
    if isinstance(module, MaskedBlockLSTM):
        lstm = nn.LSTM(module.input_size, module.hidden_size).to(module.lstm.weight_ih_l0)
        lstm.load_state_dict(_masked_weights(module))
        return lstm.eval()
    form = rhn_form(module)
    return form if form is not None else dense_embedding_form(module)


@contextmanager
def export_forms(model: nn.Module, form: Callable[[nn.Module], nn.Module | None]) -> Iterator[int]:
    """Within the block, every submodule for which ``form`` gives a module is replaced by it (its own
    submodules are then not visited); yields how many were replaced, and restores them all on exit."""
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    replaced: list[str] = []
    try:
        for name, module in list(model.named_modules()):
            if not name or any(name.startswith(r + ".") for r in replaced):
                continue
            new = form(module)
            if new is not None:
                parent_name, _, attribute = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                swaps.append((parent, attribute, module))
                setattr(parent, attribute, new)
                replaced.append(name)
        yield len(swaps)
    finally:
        for parent, attribute, module in reversed(swaps):
            setattr(parent, attribute, module)
