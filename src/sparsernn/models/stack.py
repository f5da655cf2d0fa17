"""The one description of a model's recurrent layers that structure-aware code derives from.

ISS group maps, compaction, parameter counting and Lyapunov Jacobians read a model only through
``recurrent_stack()``: which recurrent modules there are, their cell type and sizes, and who reads
each layer's output. Adding a cell type means describing it here, not editing those modules.
"""

from __future__ import annotations

from dataclasses import dataclass

# Gate blocks stacked in the rows of a cell's weight_ih / weight_hh (PyTorch's layout).
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn_tanh": ("h",), "rnn_relu": ("h",)}


@dataclass(frozen=True)
class RecurrentLayer:
    """One recurrent layer: ``module`` is the attribute path of its ``nn.LSTM``/``nn.GRU``/``nn.RNN``.

    ``receivers`` name the modules whose input is this layer's output (the next layer, the decoder).
    """

    module: str
    cell: str
    input_size: int
    hidden_size: int
    bidirectional: bool = False
    receivers: tuple[str, ...] = ()

    @property
    def gates(self) -> tuple[str, ...]:
        return GATES[self.cell]

    @property
    def state_size(self) -> int:
        """Size of the dynamical state per direction: (h, c) for an LSTM, h otherwise."""
        return 2 * self.hidden_size if self.cell == "lstm" else self.hidden_size

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)


def multiply_adds(layers: tuple[RecurrentLayer, ...], decoder_in: int, decoder_out: int) -> int:
    """Multiply-adds per token of the recurrent layers and a linear decoder (embeddings are lookups)."""
    total = sum((2 if l.bidirectional else 1) * len(l.gates) * l.hidden_size * (l.input_size + l.hidden_size)
                for l in layers)
    return total + decoder_in * decoder_out
