"""The one description of a model's recurrent layers that structure-aware code derives from.

ISS group maps, compaction, masks, parameter and multiply-add counts and Lyapunov Jacobians read a
model only through ``recurrent_stack()``: which recurrent layers there are, their cell type (looked
up in ``CELLS``) and sizes, and who reads each layer's output. A layer's ``module`` is whatever runs
it; its cell type says how to read that module's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsernn.models.cells import CELLS, Cell


@dataclass(frozen=True)
class RecurrentLayer:
    """One recurrent layer: ``module`` is the attribute path of the module that runs it, which may
    itself hold several modules (parallel block LSTMs); its cell type says how to read it.

    ``receivers`` name the modules whose input is this layer's output (the next layer, the decoder).
    A model resized (compaction) rebuilds each layer with its cell type's ``module`` factory.

    ``index`` is set when ``module`` is a multi-layer PyTorch RNN (``nn.LSTM(num_layers=2)``): the layer
    is that module's layer ``index`` (parameters ``*_l{index}``), so each layer of a deep module is
    described on its own rather than the module read as one layer; ``None``: the module is the layer.
    ``batch_first`` says how the module lays out its input (discovery reads it; the spectrum needs it).
    """

    module: str
    cell: str
    input_size: int
    hidden_size: int
    bidirectional: bool = False
    receivers: tuple[str, ...] = ()
    depth: int = 1  # micro-layers per time step (a recurrent highway network's recurrence depth)
    computed: int | None = None  # multiply-adds per token when the module does less than its shape says
    index: int | None = None
    batch_first: bool = False

    @property
    def name(self) -> str:
        """How receivers and errors name this layer: ``rnn[1]`` for layer 1 of module ``rnn``."""
        return self.module if self.index is None else f"{self.module}[{self.index}]"

    @property
    def spec(self) -> Cell:
        return CELLS[self.cell]

    @property
    def gates(self) -> tuple[str, ...]:
        return self.spec.gates

    @property
    def state_size(self) -> int:
        """Size of the dynamical state per direction: (h, c) for an LSTM, h otherwise."""
        return self.spec.state_size(self.hidden_size)

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)

    @property
    def multiply_adds(self) -> int:
        if self.computed is not None:  # a block-sparse layer computes only its blocks
            return self.computed
        return int(self.spec.multiply_adds(self.input_size, self.hidden_size, self.bidirectional, self.depth))


def multiply_adds(layers: tuple[RecurrentLayer, ...], decoder_in: int, decoder_out: int) -> int:
    """Multiply-adds per token of the recurrent layers and a linear decoder (embeddings are lookups)."""
    return sum(layer.multiply_adds for layer in layers) + decoder_in * decoder_out
