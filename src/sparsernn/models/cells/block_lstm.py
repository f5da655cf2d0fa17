"""Predefined block sparsity (Demeester et al., CoNLL 2018): an LSTM layer as N parallel smaller LSTMs.

Hidden size ``H`` is split into ``N`` segments; segment ``j`` is a dense LSTM over a contiguous
window of ``round(gamma * I)`` input dimensions whose start moves from the first to the last input
dimension as ``j`` advances. ``gamma = 1``: every segment reads the whole input; ``gamma = 1/N``:
isolated parallel LSTMs over disjoint windows. The layer is sparse by design: its ``W_hh`` is block
diagonal and its ``W_ih`` holds one window per block of rows, and it never stores the zeros.

Two forms compute the same function (tests: to 1e-6 in float64, outputs and gradients):

- ``parallel`` (default): N ``nn.LSTM`` modules, each running its whole window with PyTorch's fused
  kernel (a loop over segments, not over time steps).
- ``masked``: one ``nn.LSTM`` of the full size whose weights are multiplied by fixed block masks in
  every forward pass (the dense-kernel form; stores and multiplies the zeros).

``benchmarks/predefined_speed.py`` measures both against the dense layer of the same parameter count.
``match_gamma`` solves for the window fraction that gives a wider block-sparse layer the parameter
count of a dense one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.func import functional_call

from sparsernn.config import ModelConfig
from sparsernn.models.cells.base import CELLS, CellParams, UnitSlice
from sparsernn.models.cells.lstm import LSTM

GATES = 4


@dataclass(frozen=True)
class Segment:
    """One parallel LSTM: ``hidden`` units starting at unit ``offset``, reading inputs ``start`` to
    ``start + width``."""

    hidden: int
    offset: int
    start: int
    width: int


def block_layout(input_size: int, hidden_size: int, segments: int, gamma: float) -> list[Segment]:
    """The segments of a block-sparse layer: equal hidden blocks (the first ones one larger when ``N``
    does not divide ``H``) over windows of ``max(1, round(gamma * I))`` inputs, starts spread evenly
    from the first input to the last window."""
    if not 1 <= segments <= hidden_size:
        raise ValueError(f"block-sparse layer: {segments} segments for {hidden_size} units")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"block-sparse layer: gamma must be in (0, 1], got {gamma}")
    width = min(input_size, max(1, round(gamma * input_size)))
    base, extra = divmod(hidden_size, segments)
    layout, offset = [], 0
    for j in range(segments):
        hidden = base + (1 if j < extra else 0)
        start = round(j * (input_size - width) / (segments - 1)) if segments > 1 else 0
        layout.append(Segment(hidden, offset, start, width))
        offset += hidden
    return layout


def block_parameters(input_size: int, hidden_size: int, segments: int, gamma: float) -> int:
    """Trainable parameters of a block-sparse LSTM layer, with PyTorch's two bias vectors:
    ``sum_j 4 h_j (w + h_j) + 8 h_j``."""
    return sum(GATES * s.hidden * (s.width + s.hidden) + 2 * GATES * s.hidden
               for s in block_layout(input_size, hidden_size, segments, gamma))


def dense_parameters(input_size: int, hidden_size: int) -> int:
    return GATES * hidden_size * (input_size + hidden_size) + 2 * GATES * hidden_size


def match_gamma(dense_input: int, dense_hidden: int, sparse_input: int, sparse_hidden: int,
                segments: int) -> tuple[float, int]:
    """The window fraction ``gamma`` giving the block-sparse layer ``(sparse_input, sparse_hidden, N)``
    the parameter count of the dense ``(dense_input, dense_hidden)`` layer. The count is linear in the
    window width ``w``, so the real root is found by SciPy's brentq and then rounded to the integer
    window closest in parameters; returns ``(gamma = w / sparse_input, parameter difference)``."""
    from scipy.optimize import brentq

    target = dense_parameters(dense_input, dense_hidden)

    def excess(gamma: float) -> float:
        layout = block_layout(sparse_input, sparse_hidden, segments, 1.0)
        width = gamma * sparse_input  # the real-valued window, before rounding
        return sum(GATES * s.hidden * (width + s.hidden) + 2 * GATES * s.hidden for s in layout) - target

    lowest, highest = 1.0 / sparse_input, 1.0
    if excess(lowest) > 0:
        raise ValueError(f"even a one-input window makes the block-sparse layer larger than the dense one "
                         f"({sparse_hidden} units in {segments} segments)")
    if excess(highest) < 0:
        raise ValueError("the block-sparse layer is smaller than the dense one even with gamma 1: widen it")
    root = brentq(excess, lowest, highest)
    best = min((min(sparse_input, max(1, int(root * sparse_input) + d)) for d in (0, 1)),
               key=lambda w: abs(block_parameters(sparse_input, sparse_hidden, segments, w / sparse_input) - target))
    gamma = best / sparse_input
    return gamma, block_parameters(sparse_input, sparse_hidden, segments, gamma) - target


def block_masks(layout: list[Segment], input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked dense form's bool masks ``(W_ih (4H, I), W_hh (4H, H))`` in PyTorch's gate-major rows."""
    hidden = sum(s.hidden for s in layout)
    ih = torch.zeros(GATES, hidden, input_size, dtype=torch.bool)
    hh = torch.zeros(GATES, hidden, hidden, dtype=torch.bool)
    for s in layout:
        units = slice(s.offset, s.offset + s.hidden)
        ih[:, units, s.start:s.start + s.width] = True
        hh[:, units, units] = True
    return ih.view(GATES * hidden, input_size), hh.view(GATES * hidden, hidden)


class BlockSparseLSTM(nn.Module):
    """``x (T, B, I), (h, c) (1, B, H) -> (T, B, H), (h, c)`` as parallel LSTMs over input windows."""

    def __init__(self, input_size: int, hidden_size: int, segments: int, gamma: float) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.bidirectional = input_size, hidden_size, False
        self.layout = block_layout(input_size, hidden_size, segments, gamma)
        self.segments = nn.ModuleList(nn.LSTM(s.width, s.hidden) for s in self.layout)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        outputs, hs, cs = [], [], []
        for s, lstm in zip(self.layout, self.segments):
            units = slice(s.offset, s.offset + s.hidden)
            out, (h_j, c_j) = lstm(x[..., s.start:s.start + s.width], (h[..., units], c[..., units]))
            outputs.append(out)
            hs.append(h_j)
            cs.append(c_j)
        return torch.cat(outputs, -1), (torch.cat(hs, -1), torch.cat(cs, -1))

    def dense_weights(self) -> dict[str, torch.Tensor]:
        """The equivalent dense LSTM's weights (zeros outside the blocks), PyTorch's names and layout."""
        like = self.segments[0].weight_ih_l0
        H, I = self.hidden_size, self.input_size
        w_ih = like.new_zeros(GATES, H, I)
        w_hh = like.new_zeros(GATES, H, H)
        b_ih, b_hh = like.new_zeros(GATES, H), like.new_zeros(GATES, H)
        for s, lstm in zip(self.layout, self.segments):
            units = slice(s.offset, s.offset + s.hidden)
            w_ih[:, units, s.start:s.start + s.width] = lstm.weight_ih_l0.view(GATES, s.hidden, s.width)
            w_hh[:, units, units] = lstm.weight_hh_l0.view(GATES, s.hidden, s.hidden)
            b_ih[:, units] = lstm.bias_ih_l0.view(GATES, s.hidden)
            b_hh[:, units] = lstm.bias_hh_l0.view(GATES, s.hidden)
        return {"weight_ih_l0": w_ih.view(-1, I), "weight_hh_l0": w_hh.view(-1, H),
                "bias_ih_l0": b_ih.view(-1), "bias_hh_l0": b_hh.view(-1)}

    def multiply_adds(self) -> int:
        """Per token: what the segments compute, ``sum_j 4 h_j (w + h_j)``."""
        return sum(GATES * s.hidden * (s.width + s.hidden) for s in self.layout)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, segments={len(self.layout)}, window={self.layout[0].width}"


class MaskedBlockLSTM(nn.Module):
    """The same layer as one dense ``nn.LSTM`` whose weights are multiplied by fixed block masks in
    every forward pass (gradients outside the blocks are zero, so those weights never move)."""

    reads_child_weights = True  # forward passes its LSTM's weights itself: int8 cannot replace that LSTM

    def __init__(self, input_size: int, hidden_size: int, segments: int, gamma: float) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.bidirectional = input_size, hidden_size, False
        self.layout = block_layout(input_size, hidden_size, segments, gamma)
        self.lstm = nn.LSTM(input_size, hidden_size)
        ih, hh = block_masks(self.layout, input_size)
        self.register_buffer("block_ih", ih)
        self.register_buffer("block_hh", hh)
        with torch.no_grad():
            self.lstm.weight_ih_l0.mul_(ih)
            self.lstm.weight_hh_l0.mul_(hh)

    @torch.no_grad()
    def finish_init(self) -> None:
        """Zero the weights outside the blocks again after a model's own initialisation, so that the
        stored weights, their density and plots show the structure."""
        self.lstm.weight_ih_l0.mul_(self.block_ih)
        self.lstm.weight_hh_l0.mul_(self.block_hh)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        weights = {"weight_ih_l0": self.lstm.weight_ih_l0 * self.block_ih,
                   "weight_hh_l0": self.lstm.weight_hh_l0 * self.block_hh,
                   "bias_ih_l0": self.lstm.bias_ih_l0, "bias_hh_l0": self.lstm.bias_hh_l0}
        return functional_call(self.lstm, weights, (x, state))

    def load_parallel(self, parallel: BlockSparseLSTM) -> None:
        """Take the weights of a parallel-form layer of the same layout."""
        with torch.no_grad():
            for name, value in parallel.dense_weights().items():
                getattr(self.lstm, name).copy_(value)


class BlockLSTMSettings(ModelConfig):
    """The model section of block-sparse LSTM layers: the shared fields and the blocks' layout."""

    segments: list[int] = Field(
        default_factory=lambda: [1], min_length=1,
        description="block_lstm: parallel LSTMs per layer (one value for all layers, or one per layer)")
    gamma: list[float] = Field(
        default_factory=lambda: [1.0], min_length=1,
        description="block_lstm: fraction of the layer's input each segment reads (one value, or one per layer)")
    block_form: Literal["parallel", "masked"] = Field(
        "parallel", description="block_lstm: parallel LSTMs (stores only the blocks) | masked dense LSTM")

    def segments_of(self, layer: int) -> int:
        return self.segments[layer] if len(self.segments) > 1 else self.segments[0]

    def gamma_of(self, layer: int) -> float:
        return self.gamma[layer] if len(self.gamma) > 1 else self.gamma[0]

    @model_validator(mode="after")
    def _per_layer_lengths(self) -> BlockLSTMSettings:
        for name in ("segments", "gamma"):
            values = getattr(self, name)
            if len(values) not in (1, len(self.hidden_sizes)):
                raise ValueError(f"{name}: {len(values)} values for {len(self.hidden_sizes)} layers "
                                 "(give one for all, or one per layer)")
        if any(not 0.0 < g <= 1.0 for g in self.gamma):
            raise ValueError(f"gamma: every value must be in (0, 1], got {self.gamma}")
        if any(n < 1 for n in self.segments):
            raise ValueError(f"segments: every value must be at least 1, got {self.segments}")
        for layer, hidden in enumerate(self.hidden_sizes):
            if self.segments_of(layer) > hidden:
                raise ValueError(f"segments: {self.segments_of(layer)} segments for layer {layer + 1} of {hidden} units")
        return self


class BlockLSTM(LSTM):
    """LSTM layers of ``model.segments`` parallel LSTMs over ``model.gamma`` input windows."""

    name = "block_lstm"
    description = ("block-sparse LSTM (Demeester et al. 2018): model.segments parallel LSTMs over input "
                   "windows of model.gamma; state (h, c)")
    settings = BlockLSTMSettings
    supports_iss = False

    def module(self, input_size: int, hidden_size: int, bidirectional: bool = False, config=None,
               layer: int = 0) -> nn.Module:
        if bidirectional:
            raise ValueError("cell block_lstm has no bidirectional form yet")
        segments, gamma, form = 1, 1.0, "parallel"
        if config is not None:
            segments, gamma, form = config.segments_of(layer), config.gamma_of(layer), config.block_form
        kind = MaskedBlockLSTM if form == "masked" else BlockSparseLSTM
        return kind(input_size, hidden_size, segments, gamma)

    def parameter_roles(self, module: nn.Module) -> dict[str, str]:
        roles = {}
        for name, _ in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            roles[name] = "input" if leaf.startswith("weight_ih") else "recurrent" if leaf.startswith("weight_hh") \
                else "bias"
        return roles

    def unit_slices(self, prefix: str, module: nn.Module, layer: int, hidden: int) -> list[UnitSlice]:
        raise ValueError("ISS components of block-sparse LSTM layers are not supported (their units live in "
                         "separate modules); use block-sparse layers with the DST methods, or ISS on lstm")

    def input_weights(self, module: nn.Module) -> list[str]:
        raise ValueError("ISS through a block-sparse LSTM layer is not supported (it reads input windows)")

    def params(self, module: nn.Module, dtype: torch.dtype | None = None, layer: int = 0) -> CellParams:
        """The equivalent dense LSTM's weights: the closed-form LSTM step and Jacobian apply as they are
        (the module is one layer: ``layer`` is 0)."""
        if isinstance(module, MaskedBlockLSTM):
            dense = {"weight_ih_l0": module.lstm.weight_ih_l0 * module.block_ih,
                     "weight_hh_l0": module.lstm.weight_hh_l0 * module.block_hh,
                     "bias_ih_l0": module.lstm.bias_ih_l0, "bias_hh_l0": module.lstm.bias_hh_l0}
        else:
            dense = module.dense_weights()
        cast = {k: v.detach().to(dtype=dtype or v.dtype) for k, v in dense.items()}
        return CellParams("lstm", cast["weight_ih_l0"], cast["weight_hh_l0"], cast["bias_ih_l0"], cast["bias_hh_l0"])


CELLS.register(BlockLSTM())
