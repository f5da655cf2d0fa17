"""Predefined block sparsity: the block-sparse LSTM layer, its masked dense form, parameter matching."""

from __future__ import annotations

import pytest
import torch

from sparsernn.config import ModelConfig
from sparsernn.dynamics.jacobians import stack_jacobian, stack_params
from sparsernn.errors import ConfigError
from sparsernn.models import RNNLanguageModel, count_parameters
from sparsernn.models.cells.block_lstm import (
    BlockSparseLSTM,
    MaskedBlockLSTM,
    block_layout,
    block_parameters,
    dense_parameters,
    match_gamma,
)
from sparsernn.sparsity import resolve_method
from sparsernn.train import Trainer

from conftest import tiny_config
from test_sparsity_training import assert_masked_zero, check_after_every_step


@pytest.mark.parametrize("segments,gamma", [(3, 0.555), (4, 0.25), (2, 1.0), (1, 1.0), (5, 0.3)])
def test_block_sparse_layer_equals_its_masked_dense_form(segments, gamma):
    torch.manual_seed(0)
    parallel = BlockSparseLSTM(12, 10, segments, gamma).double()
    masked = MaskedBlockLSTM(12, 10, segments, gamma).double()
    masked.load_parallel(parallel)
    x = torch.randn(7, 3, 12, dtype=torch.float64, requires_grad=True)
    state = (torch.randn(1, 3, 10, dtype=torch.float64), torch.randn(1, 3, 10, dtype=torch.float64))
    weights = torch.linspace(-1, 1, 7 * 3 * 10, dtype=torch.float64).view(7, 3, 10)
    results = []
    for layer in (parallel, masked):
        out, (h, c) = layer(x, state)
        loss = (out * weights).sum() + h.pow(2).sum() + c.sum()
        results.append((out.detach(), torch.autograd.grad(loss, [x, *layer.parameters()])))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[0][1][0], results[1][1][0], atol=1e-6, rtol=0)  # input gradient
    # the dense form's weight gradients are the segments' gradients, placed, and zero outside the blocks
    placed = BlockSparseLSTM(12, 10, segments, gamma).double()
    with torch.no_grad():
        for p, g in zip(placed.parameters(), results[0][1][1:]):
            p.copy_(g)
    expected = placed.dense_weights()
    for name, grad in zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], results[1][1][1:]):
        torch.testing.assert_close(grad, expected[name], atol=1e-6, rtol=0)


def test_layout_moves_the_window_from_the_first_input_to_the_last():
    layout = block_layout(100, 30, 3, 0.5)
    assert [(s.hidden, s.offset, s.start, s.width) for s in layout] == [(10, 0, 0, 50), (10, 10, 25, 50),
                                                                       (10, 20, 50, 50)]
    assert all(s.start == 0 and s.width == 100 for s in block_layout(100, 30, 3, 1.0))  # gamma 1: whole input
    isolated = block_layout(99, 30, 3, 1 / 3)  # gamma 1/N: disjoint windows covering the input
    assert [(s.start, s.width) for s in isolated] == [(0, 33), (33, 33), (66, 33)]
    assert [s.hidden for s in block_layout(10, 11, 3, 1.0)] == [4, 4, 3]


@pytest.mark.parametrize("segments,gamma", [(3, 0.555), (4, 0.25), (1, 1.0)])
def test_trainable_parameters_equal_the_formula(segments, gamma):
    layer = BlockSparseLSTM(40, 30, segments, gamma)
    width = round(gamma * 40)
    sizes = [s.hidden for s in layer.layout]
    assert sum(p.numel() for p in layer.parameters()) == sum(4 * h * (width + h) + 8 * h for h in sizes)
    assert sum(p.numel() for p in layer.parameters()) == block_parameters(40, 30, segments, gamma)
    assert block_parameters(40, 30, 1, 1.0) == dense_parameters(40, 30)


def test_gamma_matching_reproduces_the_papers_example():
    """Demeester et al.: a 1725-unit layer of 3 segments with the parameters of a dense 1150: gamma 0.555."""
    gamma, difference = match_gamma(1150, 1150, 1725, 1725, 3)
    assert gamma == pytest.approx(0.555, abs=0.001)
    assert abs(difference) <= 4 * 1725  # one input column of every segment's gates: the rounding step
    assert abs(block_parameters(1725, 1725, 3, gamma) - dense_parameters(1150, 1150)) == abs(difference)
    with pytest.raises(ValueError, match="smaller than the dense one even with gamma 1"):
        match_gamma(1150, 1150, 1200, 1200, 3)


def test_match_command_prints_the_match():
    from conftest import cli_in_process

    result = cli_in_process("match", "--dense", "1150,1150", "--sparse", "1725,1725", "--segments", "3")
    assert result.returncode == 0, result.stderr
    assert "0.555" in result.stdout and "10,589,200" in result.stdout


def block_lm(form="parallel"):
    torch.manual_seed(2)
    config = ModelConfig(cell="block_lstm", hidden_sizes=[12, 15], embedding_size=9, segments=[1, 3],
                         gamma=[1.0, 0.5], block_form=form, init_range=0.3)
    return RNNLanguageModel(config, 20).double()


def test_block_lm_counts_what_it_stores_and_has_the_dense_equivalent_jacobian():
    parallel, masked = block_lm("parallel"), block_lm("masked")
    for layer_p, layer_m in zip(parallel.layers, masked.layers):
        layer_m.load_parallel(layer_p)
    with torch.no_grad():
        for name in ("embedding.weight", "decoder.weight", "decoder.bias"):
            masked.get_parameter(name).copy_(parallel.get_parameter(name))
    tokens = torch.randint(0, 20, (6, 2))
    torch.testing.assert_close(parallel(tokens, parallel.init_state(2))[0], masked(tokens, masked.init_state(2))[0],
                               atol=1e-6, rtol=0)
    assert count_parameters(parallel) < count_parameters(masked)  # the parallel form stores no zeros
    stack = parallel.recurrent_stack()
    assert stack[1].multiply_adds == sum(4 * s.hidden * (s.width + s.hidden) for s in parallel.layers[1].layout)
    states = [(0.3 * torch.randn(2, 12 if n == 0 else 15, dtype=torch.float64),) * 2 for n in range(2)]
    x = torch.randn(2, 9, dtype=torch.float64)
    _, ours = stack_jacobian(stack_params(parallel), states, x)
    _, theirs = stack_jacobian(stack_params(masked), states, x)
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


def test_sparse_training_on_block_layers_and_iss_is_refused(synthetic_corpus):
    model = {"cell": "block_lstm", "hidden_sizes": [24, 24], "segments": [3], "gamma": [0.5]}
    config = tiny_config(model=model, sparsity={"method": "set", "density": 0.5, "update_every": 4},
                         optim={"momentum": 0.9}, data={"epoch_tokens": 8 * 10 * 10}, train={"epochs": 1})
    trainer = Trainer(config, synthetic_corpus)
    masking = trainer.sparsifier.masking
    assert "layers.1.segments.2.weight_hh_l0" in masking.params
    target = masking.nonzero_count()
    check_after_every_step(trainer, lambda t: (assert_masked_zero(t), masking.nonzero_count() == target))
    trainer.fit()
    assert masking.nonzero_count() == target
    with pytest.raises(ConfigError, match="ISS components are not defined for cell block_lstm"):
        resolve_method(tiny_config(model=model, sparsity={"method": "iss", "target_units": [8]}))
    with pytest.raises(ValueError, match="segments: 2 values for 3 layers"):
        ModelConfig(cell="block_lstm", hidden_sizes=[8, 8, 8], segments=[2, 2])


def awd_config(**model):
    return tiny_config(model={"cell": "lstm", "hidden_sizes": [24, 24, 16], "embedding_size": 16, "tie_weights": True,
                              "dropout_input": 0.3, "dropout_hidden": 0.2, "dropout_output": 0.3,
                              "embedding_dropout": 0.1, "weight_drop": 0.5, "variational_dropout": True, **model},
                       optim={"name": "nt_asgd", "lr": 10.0, "nonmono": 1}, data={"epoch_tokens": 8 * 10 * 10},
                       train={"epochs": 2})


@pytest.mark.parametrize("cell", ["lstm", "block_lstm", "rhn"])
def test_weight_drop_is_a_fresh_mask_per_forward_in_training_and_none_in_evaluation(cell):
    extra = {"segments": [1, 3, 1], "gamma": [1.0, 0.5, 1.0]} if cell == "block_lstm" else \
        {"hidden_sizes": [16], "depth": 2} if cell == "rhn" else {}
    config = awd_config(cell=cell, **extra).model.model_copy(update={
        "dropout_input": 0.0, "dropout_hidden": 0.0, "dropout_output": 0.0, "embedding_dropout": 0.0})
    torch.manual_seed(0)
    model = RNNLanguageModel(config, 30).double()
    plain = RNNLanguageModel(config.model_copy(update={"weight_drop": 0.0}), 30).double()
    plain.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 30, (5, 3))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    first, _ = model(tokens, model.init_state(3))
    second, _ = model(tokens, model.init_state(3))
    assert not torch.allclose(first, second)  # a fresh DropConnect mask each pass
    reference, _ = plain.train()(tokens, plain.init_state(3))
    assert not torch.allclose(first, reference)
    first.sum().backward()
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())  # weights untouched
    model.eval()
    plain.eval()
    torch.testing.assert_close(model(tokens, model.init_state(3))[0], plain(tokens, plain.init_state(3))[0])


def test_awd_regularisers_train_and_the_finetune_phase_starts_from_the_best_model(synthetic_corpus, tmp_path):
    config = awd_config()
    first = Trainer(config, synthetic_corpus, tmp_path / "main")
    first.fit()
    best, *_ = __import__("sparsernn.runs", fromlist=["load_model"]).load_model(tmp_path / "main")
    finetune = config.model_copy(deep=True)
    finetune.optim.name = "asgd"
    finetune.train.init_from = str(tmp_path / "main")  # a run directory: its best model
    second = Trainer(finetune, synthetic_corpus, tmp_path / "finetune")
    for name, value in best.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], value), name
    result = second.fit()
    assert result["val_ppl"] < 1.05 * min(r["val_ppl"] for r in first.history)
