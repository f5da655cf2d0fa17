"""Sequence tagger: embedding -> stacked bidirectional recurrent layers -> linear tag decoder.

Each layer is one module from the cell registry with ``bidirectional=True``; the next layer and
the decoder read the concatenated ``[forward, backward]`` outputs, so each layer's output feeds both
directions of its receiver (what ISS group maps must follow).
"""

from __future__ import annotations

import torch
from torch import nn

from sparsernn.config import ModelConfig
from sparsernn.models.cells import CELLS
from sparsernn.models.stack import RecurrentLayer


class SequenceTagger(nn.Module):
    """``forward(tokens (T, B)) -> tag logits (T, B, num_tags)``; whole sentences, no carried state."""

    def __init__(self, config: ModelConfig, vocab_size: int, num_tags: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.num_tags = num_tags
        self.cell = config.cell
        sizes = list(config.hidden_sizes)
        self.embedding_size = config.embedding_size or sizes[0]
        self.embedding = nn.Embedding(vocab_size, self.embedding_size)
        inputs = [self.embedding_size, *(2 * h for h in sizes[:-1])]
        spec = CELLS[config.cell]
        self.layers = nn.ModuleList(spec.module(i, h, bidirectional=True, config=config, layer=n)
                                    for n, (i, h) in enumerate(zip(inputs, sizes)))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.decoder = nn.Linear(2 * sizes[-1], num_tags)
        if config.init_range is not None:
            for param in self.parameters():
                nn.init.uniform_(param, -config.init_range, config.init_range)

    @property
    def hidden_sizes(self) -> list[int]:
        return [layer.hidden_size for layer in self.layers]

    def resized(self, hidden_sizes: list[int]) -> SequenceTagger:
        return SequenceTagger(self.config.model_copy(update={"hidden_sizes": list(hidden_sizes),
                                                         "embedding_size": self.embedding_size}),
                              self.vocab_size, self.num_tags)

    def recurrent_stack(self) -> tuple[RecurrentLayer, ...]:
        names = [f"layers.{n}" for n in range(len(self.layers))]
        return tuple(
            RecurrentLayer(module=name, cell=self.cell, input_size=layer.input_size, hidden_size=layer.hidden_size,
                           bidirectional=True, receivers=(names[n + 1] if n + 1 < len(names) else "decoder",))
            for n, (name, layer) in enumerate(zip(names, self.layers))
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.embedding(tokens))
        for layer in self.layers:
            x, _ = layer(x)
            x = self.dropout(x)
        return self.decoder(x)
