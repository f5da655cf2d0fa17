"""Sparse word embeddings whose length follows word frequency."""

from __future__ import annotations

import collections

import pytest
import torch

from sparsernn.models.embedding import SparseEmbedding, bin_counts, solve_alpha, word_lengths, word_ranks
from sparsernn.train import Trainer

from conftest import tiny_config


def test_alpha_solver_reproduces_the_papers_numbers():
    """Demeester et al.: V = 44k, k = 20, delta_E = 0.2: alpha about 0.75, about 25% of the words of
    length 1 and about 192 of the full length 20."""
    assert solve_alpha(20, 0.2) == pytest.approx(0.75, abs=0.002)
    lengths = collections.Counter(word_lengths(44_000, 20, 0.2))
    assert lengths[1] / 44_000 == pytest.approx(0.25, abs=0.005)
    assert abs(lengths[20] - 192) <= 5
    assert sum(length * n for length, n in lengths.items()) == round(0.2 * 20 * 44_000)


@pytest.mark.parametrize("vocab,dims,density,bins", [(1000, 8, 0.25, None), (997, 20, 0.1, None),
                                                      (5000, 20, 0.33, [4, 4, 4, 8]), (300, 10, 1.0, None)])
def test_trainable_count_is_the_density_times_k_times_v(vocab, dims, density, bins):
    layer = SparseEmbedding(vocab, dims, density, bins)
    assert sum(p.numel() for p in layer.parameters()) == layer.trainable
    assert abs(layer.trainable - density * dims * vocab) <= max(bins or [1])  # within one bin's rounding
    counts = bin_counts(vocab, dims, density, bins)
    assert counts[0] == vocab and all(a >= b for a, b in zip(counts, counts[1:]))


def test_sort_modes_order_words_as_named():
    frequencies = torch.tensor([5, 50, 1, 20, 0])
    assert word_ranks(frequencies, "up").tolist() == [2, 0, 3, 1, 4]  # word 1 (50) is ranked first
    assert word_ranks(frequencies, "down").tolist() == [2, 4, 1, 3, 0]  # word 4 (0) is ranked first
    assert word_ranks(frequencies, "none").tolist() == [0, 1, 2, 3, 4]
    shuffled = word_ranks(frequencies, "random", seed=3)
    assert sorted(shuffled.tolist()) == [0, 1, 2, 3, 4] and torch.equal(shuffled, word_ranks(frequencies, "random", 3))
    layer = SparseEmbedding(5, 4, 0.5, ranks=word_ranks(frequencies, "up"))
    lengths = [int((layer.dense_weight()[w] != 0).sum()) for w in range(5)]
    assert lengths[1] == max(lengths) and lengths[4] == min(lengths)  # frequent long, rare short


def test_gradient_reaches_only_the_trainable_entries():
    torch.manual_seed(0)
    layer = SparseEmbedding(50, 6, 0.3, ranks=torch.randperm(50))
    tokens = torch.cat([torch.arange(50), torch.randint(0, 50, (30,))]).view(20, 4)  # every word at least once
    dense = layer.dense_weight().detach().requires_grad_()
    target = torch.randn(20, 4, 6)
    ((layer(tokens) - target) ** 2).sum().backward()
    ((dense[tokens] - target) ** 2).sum().backward()
    lengths = torch.tensor(word_lengths(50, 6, 0.3))[layer.ranks]  # per word id
    trainable = torch.arange(6) < lengths.unsqueeze(1)
    assert (dense.grad[~trainable] != 0).any()  # a dense V x k parameter would move there
    # the blocks receive exactly the dense gradient's trainable entries, and nothing else exists
    by_rank = torch.zeros(50, 6)
    for b, block in enumerate(layer.blocks):
        by_rank[layer.starts[b]:layer.starts[b + 1], : layer.lengths[b]] = block.grad
    torch.testing.assert_close(by_rank[layer.ranks], dense.grad * trainable)
    assert sum(p.numel() for p in layer.parameters()) == int(trainable.sum()) == layer.trainable


def test_a_language_model_with_a_sparse_embedding_trains_and_round_trips(synthetic_corpus, tmp_path):
    from sparsernn.runs import load_model

    config = tiny_config(model={"embedding_size": 16, "embedding_density": 0.25, "embedding_sort": "up"},
                         data={"epoch_tokens": 8 * 10 * 10}, train={"epochs": 1},
                         sparsity={"method": "set", "density": 0.5, "update_every": 4})
    trainer = Trainer(config, synthetic_corpus, tmp_path)
    trainer.fit()
    embedding = trainer.model.embedding
    frequencies = torch.bincount(synthetic_corpus.train, minlength=len(synthetic_corpus.vocab))
    assert embedding.ranks[frequencies.argmax()] == 0  # the most frequent word has the longest embedding
    model, *_ = load_model(tmp_path)
    assert torch.equal(model.embedding.ranks, embedding.ranks)
    assert "embedding.blocks.0" in trainer.sparsifier.masking.params  # masks see the blocks
