"""Sequence tagger: embedding -> stacked bidirectional recurrent layers -> (tanh layer) -> tag decoder.

Each layer is one module from the cell registry with ``bidirectional=True``; the next layer and
the decoder read the concatenated ``[forward, backward]`` outputs, so each layer's output feeds both
directions of its receiver (what ISS group maps must follow). Sentences of a batch are packed by
length, so the backward direction starts at each sentence's last real token, never at padding.
The POS tagger of Demeester et al. (2018): embedding 20, 10 units per direction, a tanh layer of 10.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from sparsernn.config import ModelConfig
from sparsernn.models.cells import CELLS
from sparsernn.models.lm import _dropout, dropped_recurrent_weights, embed_with_word_dropout, make_embedding
from sparsernn.models.stack import RecurrentLayer


class SequenceTagger(nn.Module):
    """``forward(tokens (T, B), lengths (B,) or None) -> tag logits (T, B, num_tags)``; whole sentences."""

    def __init__(self, config: ModelConfig, vocab_size: int, num_tags: int,
                 word_ranks: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.num_tags = num_tags
        self.cell = config.cell
        sizes = list(config.hidden_sizes)
        self.embedding_size = config.embedding_size or sizes[0]
        self.embedding = make_embedding(config, vocab_size, self.embedding_size, word_ranks)
        inputs = [self.embedding_size, *(2 * h for h in sizes[:-1])]
        spec = CELLS[config.cell]
        self.layers = nn.ModuleList(spec.module(i, h, bidirectional=True, config=config, layer=n)
                                    for n, (i, h) in enumerate(zip(inputs, sizes)))
        self.dropout_input = _dropout(config.dropout_input, config)
        self.dropout_hidden = _dropout(config.dropout_hidden, config)
        self.dropout_output = _dropout(config.dropout_output, config)
        width = 2 * sizes[-1]
        self.projection = nn.Linear(width, config.projection_size) if config.projection_size else None
        self.decoder = nn.Linear(config.projection_size or width, num_tags)
        if config.init_range is not None:
            for param in self.parameters():
                nn.init.uniform_(param, -config.init_range, config.init_range)

    @property
    def hidden_sizes(self) -> list[int]:
        return [layer.hidden_size for layer in self.layers]

    def resized(self, hidden_sizes: list[int]) -> SequenceTagger:
        return SequenceTagger(self.config.model_copy(update={"hidden_sizes": list(hidden_sizes),
                                                         "embedding_size": self.embedding_size}),
                              self.vocab_size, self.num_tags, getattr(self.embedding, "ranks", None))

    def recurrent_stack(self) -> tuple[RecurrentLayer, ...]:
        names = [f"layers.{n}" for n in range(len(self.layers))]
        last = "projection" if self.projection is not None else "decoder"
        return tuple(
            RecurrentLayer(module=name, cell=self.cell, input_size=layer.input_size, hidden_size=layer.hidden_size,
                           bidirectional=True, receivers=(names[n + 1] if n + 1 < len(names) else last,))
            for n, (name, layer) in enumerate(zip(names, self.layers))
        )

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.dropout_input(embed_with_word_dropout(self.embedding, tokens, self.config.embedding_dropout,
                                                       self.training))
        steps = x.shape[0]
        packed = lengths is not None and bool((lengths < steps).any())
        last = len(self.layers) - 1
        for n, layer in enumerate(self.layers):
            inputs = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False) if packed else x
            if self.training and self.config.weight_drop > 0:
                y, _ = functional_call(layer, dropped_recurrent_weights(layer, self.cell, self.config.weight_drop),
                                       (inputs,))
            else:
                y, _ = layer(inputs)
            x = pad_packed_sequence(y, total_length=steps)[0] if isinstance(y, PackedSequence) else y
            x = self.dropout_output(x) if n == last else self.dropout_hidden(x)
        if self.projection is not None:
            x = torch.tanh(self.projection(x))
        return self.decoder(x)
