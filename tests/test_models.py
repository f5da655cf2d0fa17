from __future__ import annotations

import pytest
import torch

from sparsernn.config import ModelConfig
from sparsernn.models import RNNLanguageModel, count_parameters


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_per_layer_hidden_sizes_and_shapes(cell):
    model = RNNLanguageModel(ModelConfig(cell=cell, hidden_sizes=[37, 31, 23], embedding_size=16), vocab_size=50)
    assert model.hidden_sizes == [37, 31, 23]
    tokens = torch.randint(0, 50, (7, 3))
    logits, state = model(tokens, model.init_state(3))
    assert logits.shape == (7, 3, 50)
    assert len(state) == 3
    stack = model.recurrent_stack()
    assert [(l.input_size, l.hidden_size) for l in stack] == [(16, 37), (37, 31), (31, 23)]
    assert [l.receivers for l in stack] == [("layers.1",), ("layers.2",), ("decoder",)]
    for layer in stack:  # the description names real modules of the right size
        module = model.get_submodule(layer.module)
        assert module.weight_hh_l0.shape == (len(layer.gates) * layer.hidden_size, layer.hidden_size)


def test_state_is_carried_not_reset():
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(hidden_sizes=[8]), vocab_size=10)
    tokens = torch.randint(0, 10, (6, 2))
    whole, _ = model(tokens, model.init_state(2))
    first, state = model(tokens[:3], model.init_state(2))
    second, _ = model(tokens[3:], state)
    torch.testing.assert_close(torch.cat([first, second]), whole)


def test_uniform_init_and_tied_weights():
    model = RNNLanguageModel(ModelConfig(hidden_sizes=[12, 12], tie_weights=True, init_range=0.05), vocab_size=30)
    assert model.decoder.weight is model.embedding.weight
    assert all(p.abs().max() <= 0.05 for p in model.parameters())
    untied = RNNLanguageModel(ModelConfig(hidden_sizes=[12, 12], init_range=0.05), vocab_size=30)
    assert count_parameters(untied) - count_parameters(model) == 30 * 12


def test_zaremba_small_parameter_count():
    model = RNNLanguageModel(ModelConfig(hidden_sizes=[200, 200]), vocab_size=10000)
    lstm = 4 * 200 * (200 + 200) + 2 * 4 * 200  # weights + PyTorch's two bias vectors
    assert count_parameters(model) == 10000 * 200 + 2 * lstm + 200 * 10000 + 10000


def test_multiply_adds_reproduce_the_iss_papers_reduction():
    from sparsernn.models.stack import multiply_adds

    def per_token(sizes):
        model = RNNLanguageModel(ModelConfig(hidden_sizes=sizes, embedding_size=1500), vocab_size=10000)
        return multiply_adds(model.recurrent_stack(), model.decoder.in_features, model.decoder.out_features)

    assert per_token([1500, 1500]) == 2 * 4 * 1500 * 3000 + 1500 * 10000
    assert per_token([1500, 1500]) / per_token([373, 315]) == pytest.approx(7.48, abs=0.01)  # Wen et al. Table 1
