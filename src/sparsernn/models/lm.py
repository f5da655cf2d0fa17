"""Recurrent language model: embedding -> stacked recurrent layers -> linear decoder.

Each layer is its own single-layer module from the cell registry (``nn.LSTM``/``nn.GRU``/``nn.RNN``) so that layers can have different
hidden sizes (compacted ISS models do) while keeping PyTorch's fused kernels. Dropout follows
Zaremba et al. (2014): on the non-recurrent connections only (embedding output, between layers,
before the decoder).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from sparsernn.config import ModelConfig
from sparsernn.models.cells import CELLS, LayerState
from sparsernn.models.embedding import SparseEmbedding
from sparsernn.models.stack import RecurrentLayer


class RNNLanguageModel(nn.Module):
    """Word-level LM. ``forward(tokens (T, B), state) -> (logits (T, B, V), new state)``."""

    def __init__(self, config: ModelConfig, vocab_size: int, word_ranks: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.cell = config.cell
        spec = CELLS[config.cell]
        sizes = list(config.hidden_sizes)
        self.embedding_size = config.embedding_size or sizes[0]
        self.embedding = make_embedding(config, vocab_size, self.embedding_size, word_ranks)
        inputs = [self.embedding_size, *sizes[:-1]]
        self.layers = nn.ModuleList(spec.module(i, h, config=config, layer=n)
                                    for n, (i, h) in enumerate(zip(inputs, sizes)))
        self.dropout_input = _dropout(config.dropout_input, config)
        self.dropout_hidden = _dropout(config.dropout_hidden, config)
        self.dropout_output = _dropout(config.dropout_output, config)
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        if config.init_range is not None:
            for param in self.parameters():
                nn.init.uniform_(param, -config.init_range, config.init_range)
            for layer in self.layers:  # what a layer sets on purpose: an RHN's transform-gate bias, block masks
                if hasattr(layer, "finish_init"):
                    layer.finish_init()
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight

    @property
    def hidden_sizes(self) -> list[int]:
        return [layer.hidden_size for layer in self.layers]

    def resized(self, hidden_sizes: list[int]) -> RNNLanguageModel:
        """A fresh model like this one with other per-layer hidden sizes (compaction target)."""
        # tied: the embedding is the decoder's weight, as wide as the last layer
        embedding = hidden_sizes[-1] if self.config.tie_weights else self.embedding_size
        return RNNLanguageModel(self.config.model_copy(update={"hidden_sizes": list(hidden_sizes),
                                                         "embedding_size": embedding}), self.vocab_size,
                                getattr(self.embedding, "ranks", None))

    def recurrent_stack(self) -> tuple[RecurrentLayer, ...]:
        names = [f"layers.{n}" for n in range(len(self.layers))]
        last = ("decoder", "embedding") if self.config.tie_weights else ("decoder",)
        return tuple(
            RecurrentLayer(
                module=name,
                cell=self.cell,
                input_size=layer.input_size,
                hidden_size=layer.hidden_size,
                # tied: the embedding is the decoder's weight, so it reads the last layer's units too
                receivers=(names[n + 1],) if n + 1 < len(names) else last,
                depth=getattr(layer, "depth", 1),
                computed=layer.multiply_adds() if hasattr(layer, "multiply_adds") else None,
            )
            for n, (name, layer) in enumerate(zip(names, self.layers))
        )

    def init_state(self, batch_size: int) -> list[LayerState]:
        spec = CELLS[self.cell]
        # the embedding's dtype and device: it stays float when the decoder is quantized to int8
        like = next(self.embedding.parameters())
        return [spec.zero_state(batch_size, h, like) for h in self.hidden_sizes]

    def forward(self, tokens: torch.Tensor, state: list[LayerState]) -> tuple[torch.Tensor, list[LayerState]]:
        x = self.dropout_input(self._embed(tokens))
        new_state = []
        last = len(self.layers) - 1
        for n, (layer, layer_state) in enumerate(zip(self.layers, state)):
            if self.training and self.config.weight_drop > 0:
                x, layer_state = functional_call(layer, self._dropped_weights(layer), (x, layer_state))
            else:
                x, layer_state = layer(x, layer_state)
            x = self.dropout_output(x) if n == last else self.dropout_hidden(x)
            new_state.append(layer_state)
        return self.decoder(x), new_state

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return embed_with_word_dropout(self.embedding, tokens, self.config.embedding_dropout, self.training)

    def _dropped_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        return dropped_recurrent_weights(layer, self.cell, self.config.weight_drop)


def embed_with_word_dropout(embedding: nn.Module, tokens: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Embedding lookup; in training with ``p > 0`` each word is dropped (all its occurrences in the
    batch) with probability ``p`` (Gal & Ghahramani's embedding dropout; AWD-LSTM's dropoute)."""
    out = embedding(tokens)
    if not training or p == 0:
        return out
    keep = out.new_empty(embedding.num_embeddings).bernoulli_(1 - p).div_(1 - p)
    return out * keep[tokens].unsqueeze(-1)


def dropped_recurrent_weights(layer: nn.Module, cell: str, p: float) -> dict[str, torch.Tensor]:
    """DropConnect on a layer's recurrent weights (Wan et al. 2013; AWD-LSTM's WeightDrop): a fresh mask
    per call, for ``functional_call`` on the unchanged module, so its fused kernel runs on them."""
    roles = CELLS[cell].parameter_roles(layer)
    return {name: w * w.new_empty(w.shape).bernoulli_(1 - p).div_(1 - p)
            for name, w in layer.named_parameters() if roles[name] == "recurrent"}


def make_embedding(config: ModelConfig, vocab_size: int, size: int, word_ranks: torch.Tensor | None) -> nn.Module:
    """A dense ``nn.Embedding``, or a sparse one whose lengths follow ``word_ranks`` (0 = longest)."""
    if config.embedding_density == 1.0:
        return nn.Embedding(vocab_size, size)
    return SparseEmbedding(vocab_size, size, config.embedding_density, config.embedding_bins, word_ranks)


def _dropout(p: float | None, config: ModelConfig) -> nn.Module:
    p = config.dropout if p is None else p
    if p == 0:  # p=0 dropout still copies tensors in training mode; skip it entirely
        return nn.Identity()
    return LockedDropout(p) if config.variational_dropout else nn.Dropout(p)


class LockedDropout(nn.Module):
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence, shared by every time step of
    the window, on ``(T, B, F)`` activations."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        return x * x.new_empty(1, *x.shape[1:]).bernoulli_(keep).div_(keep)


def detach_state(state: list[LayerState]) -> list[LayerState]:
    """Cut the graph between BPTT windows while carrying the values across."""
    return [tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach() for s in state]


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied weight counts once)."""
    return sum(p.numel() for p in model.parameters())
