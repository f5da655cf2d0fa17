"""What a recurrent cell type is: the one description every structure-aware part of sparsernn reads.

A ``Cell`` says, once per cell type: its gates (blocks of rows in ``W_ih``/``W_hh``, PyTorch's
layout), its state layout (``(h, c)`` or ``h``), the module that runs it (PyTorch's fused kernels),
the roles of that module's parameters, the weight dimensions indexed by its hidden units (ISS
components, compaction), its multiply-add count, and its closed-form step with the Jacobian of that
step (Lyapunov spectra). Models, masks, ISS, the density report, plots and the Jacobian engine look
cells up in ``CELLS`` by name; adding a cell type is one new file that registers itself.

The Jacobian helpers here are pure: tensors in, tensors out. Shapes: ``K`` samples, ``H`` hidden
units, ``k`` basis columns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsernn.config import ModelConfig
from sparsernn.registry import Registry
from sparsernn.settings import CELL_SETTINGS, own_fields

# Per-layer recurrent state as PyTorch's modules take it: (h, c) for an LSTM, h otherwise;
# each tensor is (directions, batch, hidden).
LayerState = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class UnitSlice:
    """Dimension ``dim`` of parameter ``param`` holds ``blocks`` consecutive blocks of ``hidden`` units
    of recurrent layer ``layer`` (row ``b*hidden + k`` belongs to unit k). ``crosses``: the parameter is
    also indexed by the same units along its other dimension (``W_hh``: row k and column k), so the
    entries where the two meet belong to a unit once, not twice."""

    param: str
    dim: int
    layer: int
    blocks: int
    hidden: int
    is_bias: bool = False
    crosses: bool = False


@dataclass(frozen=True)
class CellParams:
    """One layer's weights for the closed-form step: ``w_ih (G*H, I)``, ``w_hh (G*H, H)`` and the two
    biases ``(G*H,)`` (GRU's candidate gate multiplies ``r`` into ``W_hn h + b_hn``, so they stay apart)."""

    cell: str
    w_ih: torch.Tensor
    w_hh: torch.Tensor
    b_ih: torch.Tensor
    b_hh: torch.Tensor

    @property
    def hidden_size(self) -> int:
        return self.w_hh.shape[1]


class Cell(ABC):
    """A recurrent cell type. Subclasses set ``name``, ``description``, ``gates``, ``state_tensors`` and
    write the module factory and the closed-form step; the rest follows PyTorch's fused-RNN layout."""

    name: str
    description: str
    gates: tuple[str, ...]
    state_tensors: int = 1  # tensors in a layer's state: 2 for (h, c), 1 for h
    # the model section of a run with this cell: ModelConfig, or a subclass adding the cell's own options
    # (RHN: depth, ...), each typed, validated and documented there; `--cell NAME` selects it
    settings: ClassVar[type[ModelConfig]] = ModelConfig
    supports_iss: bool = True  # ISS components (unit_slices) and compaction are defined for it

    @property
    def options(self) -> tuple[str, ...]:
        """The cell's own settings: the fields its settings model adds to ModelConfig."""
        return own_fields(self.settings, ModelConfig)

    # ---- the module ------------------------------------------------------------------------------

    @abstractmethod
    def module(self, input_size: int, hidden_size: int, bidirectional: bool = False,
               config: Any = None, layer: int = 0) -> nn.Module:
        """A one-layer module running this cell over a sequence: ``(T, B, I), state -> (T, B, D*H), state``;
        ``config`` (the run's ModelConfig; the cell registry imports nothing of ours) carries the cell's
        options (``options``), some per layer (``layer``)."""

    def describes(self, module: nn.Module) -> bool:
        """Whether ``module``, found in a user's model, runs this cell (discovery of PyTorch's own
        ``nn.LSTM``/``nn.GRU``/``nn.RNN``); the toolkit-only cells describe no foreign module."""
        return False

    def parameter_roles(self, module: nn.Module) -> dict[str, str]:
        """``{parameter name: "input" | "recurrent" | "bias"}`` of one layer's module."""
        roles = {}
        for name, _ in module.named_parameters():
            roles[name] = ("input" if name.startswith("weight_ih") else "recurrent" if name.startswith("weight_hh")
                           else "bias")
        return roles

    def weights(self, module: nn.Module) -> list[str]:
        """The weight matrices of one layer's module (what masks may prune), in order."""
        return [name for name, role in self.parameter_roles(module).items() if role != "bias"]

    def unit_slices(self, prefix: str, module: nn.Module, layer: int, hidden: int) -> list[UnitSlice]:
        """The dimensions of this layer's own parameters indexed by its hidden units: the gate rows of
        every weight and bias (each direction's matrix separately) and the columns of ``W_hh``."""
        slices = []
        for name, role in self.parameter_roles(module).items():
            full = f"{prefix}.{name}"
            slices.append(UnitSlice(full, 0, layer, len(self.gates), hidden, is_bias=role == "bias",
                                    crosses=role == "recurrent"))
            if role == "recurrent":
                slices.append(UnitSlice(full, 1, layer, 1, hidden))
        return slices

    def input_weights(self, module: nn.Module) -> list[str]:
        """The weights that read this layer's input (whose columns follow the layer below's units)."""
        return [name for name, role in self.parameter_roles(module).items() if role == "input"]

    def multiply_adds(self, input_size: float, hidden_size: float, bidirectional: bool = False,
                      depth: int = 1) -> float:
        """Per token: every gate's ``W_ih x`` and, per micro-layer, ``W_hh h`` (element-wise work is not
        counted). Real sizes are allowed (root finding over widths)."""
        return (2 if bidirectional else 1) * len(self.gates) * hidden_size * (input_size + depth * hidden_size)

    # ---- the state -------------------------------------------------------------------------------

    def zero_state(self, batch: int, hidden: int, like: torch.Tensor, directions: int = 1) -> LayerState:
        zeros = tuple(like.new_zeros(directions, batch, hidden) for _ in range(self.state_tensors))
        return zeros if self.state_tensors > 1 else zeros[0]

    # ---- the dynamics ----------------------------------------------------------------------------

    def state_size(self, hidden: int, mode: str = "hc") -> int:
        """Size of the dynamical state of one layer (``mode`` "h": an LSTM's c held fixed in the step)."""
        return hidden

    def params(self, module: nn.Module, dtype: torch.dtype | None = None, layer: int = 0) -> CellParams:
        """The weights of one direction of layer ``layer`` of ``module`` (PyTorch's ``*_l{layer}``) for
        ``step``, cast to ``dtype`` (absent biases are zeros). The layer is named by the caller: a
        multi-layer ``nn.LSTM`` is several layers, never read as its first alone."""
        like = getattr(module, f"weight_hh_l{layer}")
        rows, hidden = like.shape

        def get(name: str, *shape: int) -> torch.Tensor:
            value = getattr(module, f"{name}_l{layer}", None)
            if value is None:
                return torch.zeros(shape, dtype=dtype or like.dtype, device=like.device)
            return value.detach().to(dtype=dtype or value.dtype)

        return CellParams(self.name, get("weight_ih", rows, getattr(module, f"weight_ih_l{layer}").shape[1]),
                          get("weight_hh", rows, hidden), get("bias_ih", rows), get("bias_hh", rows))

    @abstractmethod
    def step(self, p: CellParams, h: torch.Tensor, c: torch.Tensor | None, x: torch.Tensor,
             mode: str = "hc") -> tuple[torch.Tensor, torch.Tensor | None, CellJacobian]:
        """Advance one layer, batched: ``h, c (K, H)``, ``x (K, I)`` -> ``(h', c', Jacobian of the step)``."""


CELLS: Registry[Cell] = Registry("cell")
CELL_SETTINGS.bind(lambda name: CELLS[name].settings, CELLS.names)  # model.cell selects the cell's settings


# ---- the Jacobian of one step ---------------------------------------------------------------------


def gate_sum(coefficients: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum_g diag(coefficients[:, g]) @ W_g`` for the gate blocks ``W_g`` stacked in ``weight``.

    ``coefficients (K, G, H)``, ``weight (G*H, C)`` -> ``(K, H, C)``: one pass per gate, in place
    (an einsum here batches over the H rows and is several times slower on CPU).
    """
    blocks = weight.view(coefficients.shape[1], coefficients.shape[2], -1)
    total = coefficients[:, 0].unsqueeze(-1) * blocks[0]
    for gate in range(1, len(blocks)):
        total.addcmul_(coefficients[:, gate].unsqueeze(-1), blocks[gate])
    return total


def scale_rows(scale: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``diag(scale) @ matrix`` for ``scale (K, H)``, batched."""
    return scale.unsqueeze(-1) * matrix


def new_basis(like: torch.Tensor, rows: int) -> torch.Tensor:
    """An empty ``(K, rows, k)`` basis laid out column-major, as LAPACK's QR wants its input (saves
    the transposing copy ``geqrf`` otherwise makes; the products write into it just as fast)."""
    return like.new_empty(like.shape[0], like.shape[2], rows).mT


def bmm_into(out: torch.Tensor, products: list[tuple[torch.Tensor, torch.Tensor]], accumulate: bool) -> torch.Tensor:
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


class CellJacobian(ABC):
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
