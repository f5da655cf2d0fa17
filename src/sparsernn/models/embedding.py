"""Sparse word embeddings whose length follows word frequency (Demeester et al., CoNLL 2018).

Words are ranked (by training frequency: ``up`` gives the most frequent words the longest embeddings,
``down`` the shortest, ``none`` keeps the vocabulary's order, ``random`` shuffles). Dimension ``j`` of
the ``k`` is trainable for the ``n_j`` top-ranked words, ``n_0 = V`` and ``n_j ~ V alpha^j``, so a word's
embedding length is the number of dimensions it has; ``alpha`` is solved (SciPy) so that the trainable
entries are ``delta_E k V``. With bins of widths ``kappa_m`` the decay is per bin: the ``n_m`` top words
have the ``kappa_m`` dimensions of bin ``m``.

The layer stores one dense block per embedding length (the words of that length, as wide as their
length) and pads lookups with zeros up to ``k``: it never holds a ``V x k`` parameter with a mask, so
its parameter count is its real trainable size and no gradient exists outside the trainable entries.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def solve_alpha(dimensions: int, density: float, bins: list[int] | None = None) -> float:
    """``alpha`` with ``sum_m kappa_m alpha^m = density * k`` (``kappa_m = 1`` per dimension without bins):
    the fraction of words that keep each further bin. 1 for density 1."""
    from scipy.optimize import brentq

    widths = bins or [1] * dimensions
    if sum(widths) != dimensions:
        raise ValueError(f"embedding bins {widths} add up to {sum(widths)}, not the embedding size {dimensions}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"embedding density must be in (0, 1], got {density}")
    if density == 1.0:
        return 1.0
    floor = widths[0] / dimensions  # every word has its first bin
    if density < floor:
        raise ValueError(f"embedding density {density} is below {floor:.4f}: every word keeps its first "
                         f"{widths[0]} dimension(s)")
    return brentq(lambda a: sum(w * a ** m for m, w in enumerate(widths)) - density * dimensions, 0.0, 1.0)


def bin_counts(vocab_size: int, dimensions: int, density: float, bins: list[int] | None = None) -> list[int]:
    """Words with bin ``m`` trainable, per bin: ``V alpha^m`` made integers (non-increasing, the first bin
    every word) so that the trainable entries are the rounded ``density * k * V`` (the rounding each
    count loses is made up by the largest remainders, the paper's compensation)."""
    widths = bins or [1] * dimensions
    alpha = solve_alpha(dimensions, density, widths)
    exact = [vocab_size * alpha ** m for m in range(len(widths))]
    counts = [math.floor(v) for v in exact]
    counts[0] = vocab_size
    target = round(density * dimensions * vocab_size)
    missing = target - sum(c * w for c, w in zip(counts, widths))
    # add words to bins in order of their remainder, keeping counts non-increasing
    for m in sorted(range(1, len(widths)), key=lambda m: exact[m] - counts[m], reverse=True):
        if missing < widths[m]:
            break
        if counts[m] < counts[m - 1]:
            counts[m] += 1
            missing -= widths[m]
    return counts


def word_lengths(vocab_size: int, dimensions: int, density: float, bins: list[int] | None = None) -> list[int]:
    """Embedding length of the word at each rank (0 = most highly ranked)."""
    widths = bins or [1] * dimensions
    counts = bin_counts(vocab_size, dimensions, density, widths)
    ends = [sum(widths[: m + 1]) for m in range(len(widths))]
    lengths = []
    for rank in range(vocab_size):
        kept = sum(1 for c in counts if c > rank)  # bins are nested: the top words keep the most
        lengths.append(ends[kept - 1])
    return lengths


def word_ranks(frequencies: torch.Tensor, sort: str, seed: int = 0) -> torch.Tensor:
    """Rank of each word id (0 = gets the longest embedding): ``up`` most frequent first, ``down`` least
    frequent first, ``none`` the vocabulary's own order, ``random`` a seeded shuffle."""
    vocab = frequencies.numel()
    if sort == "none":
        order = torch.arange(vocab)
    elif sort == "random":
        order = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed))
    elif sort in ("up", "down"):
        # stable: ties keep vocabulary order, so ranks are deterministic
        order = torch.sort(frequencies, descending=sort == "up", stable=True).indices
    else:
        raise ValueError(f"embedding sort must be up, down, none or random, got {sort!r}")
    ranks = torch.empty(vocab, dtype=torch.long)
    ranks[order] = torch.arange(vocab)
    return ranks


class SparseEmbedding(nn.Module):
    """``tokens (...) -> (..., k)``: word ``w`` has the first ``length(rank(w))`` dimensions trainable,
    the rest zero. Blocks ``blocks.b`` hold the words of one length (rows in rank order)."""

    def __init__(self, vocab_size: int, dimensions: int, density: float, bins: list[int] | None = None,
                 ranks: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = vocab_size, dimensions
        self.density, self.bins = density, bins
        lengths = word_lengths(vocab_size, dimensions, density, bins)
        # block boundaries in rank order: lengths are non-increasing with rank
        self.lengths: list[int] = []
        starts: list[int] = []
        for rank, length in enumerate(lengths):
            if not self.lengths or length != self.lengths[-1]:
                self.lengths.append(length)
                starts.append(rank)
        self.starts = starts + [vocab_size]
        self.blocks = nn.ParameterList(nn.Parameter(torch.empty(self.starts[b + 1] - self.starts[b], length))
                                       for b, length in enumerate(self.lengths))
        self.register_buffer("ranks", ranks.clone() if ranks is not None else torch.arange(vocab_size))
        for block in self.blocks:
            nn.init.normal_(block)

    @property
    def trainable(self) -> int:
        return sum(block.numel() for block in self.blocks)

    def dense_weight(self) -> torch.Tensor:
        """The ``V x k`` matrix this layer represents (zeros outside the trainable entries), rows by word id."""
        by_rank = self.blocks[0].new_zeros(self.num_embeddings, self.embedding_dim)
        for b, block in enumerate(self.blocks):
            by_rank[self.starts[b]:self.starts[b + 1], : self.lengths[b]] = block
        return by_rank[self.ranks]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ranks = self.ranks[tokens]
        out = self.blocks[0].new_zeros(*tokens.shape, self.embedding_dim)
        for b, block in enumerate(self.blocks):
            inside = (ranks >= self.starts[b]) & (ranks < self.starts[b + 1])
            if inside.any():
                out[inside, : self.lengths[b]] = block[ranks[inside] - self.starts[b]]
        return out

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, density={self.density}, "
                f"lengths {self.lengths[0]}..{self.lengths[-1]}, trainable={self.trainable}")
