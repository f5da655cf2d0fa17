"""Recurrent Highway Networks through the cell registry: the step, its fast backward, ISS groups and
compaction, Jacobians, sparse training and end-to-end training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsernn.config import ModelConfig
from sparsernn.models import RNNLanguageModel
from sparsernn.models.cells import CELLS
from sparsernn.models.cells.rhn import RecurrentHighway, RHNSequence, rhn_reference
from sparsernn.dynamics.jacobians import stack_jacobian, stack_params, stack_step
from sparsernn.sparsity.iss import compact, component_masks, removable_units, unit_slices
from sparsernn.train import Trainer

from conftest import tiny_config, train_until_interrupted
from test_iss import remove_units
from test_sparsity_training import assert_masked_zero, check_after_every_step


def rhn_lm(cell="rhn", hidden=(12, 9), depth=3, embedding=7, tie=False, vocab=20, seed=0, **extra):
    torch.manual_seed(seed)
    config = ModelConfig(cell=cell, hidden_sizes=list(hidden), depth=depth, embedding_size=embedding,
                         tie_weights=tie, init_range=0.4, **extra)
    return RNNLanguageModel(config, vocab).double()


def test_depth_one_with_the_carry_gate_off_is_a_tanh_rnn():
    layer = RecurrentHighway(5, 6, depth=1, coupled=False).double()
    with torch.no_grad():  # T = 1 and C = 0 exactly: s' = tanh(W_H x + R_H s + b_H)
        for weight in (layer.weight_ih, layer.weight_hh_0):
            weight[6:].zero_()
        layer.bias_hh_0[6:12].fill_(50.0)
        layer.bias_hh_0[12:].fill_(-1000.0)
    rnn = nn.RNN(5, 6, nonlinearity="tanh").double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(layer.weight_ih[:6])
        rnn.weight_hh_l0.copy_(layer.weight_hh_0[:6])
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.copy_(layer.bias_hh_0[:6])
    x, state = torch.randn(7, 3, 5, dtype=torch.float64), torch.randn(1, 3, 6, dtype=torch.float64)
    for fast in (True, False):
        layer.fast = fast
        ours, last = layer(x, state)
        theirs, their_last = rnn(x, state)
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
        torch.testing.assert_close(last, their_last, atol=1e-12, rtol=0)


def test_iss_component_of_the_papers_rhn_has_its_size():
    """Depth 10, width 830, tied (Zilly et al.'s variational RHN + WT): the ISS paper counts 46,520
    weights per component, counting the 22 entries where a row meets its own column twice (R_H, R_T at
    10 micro-layers, and W_H, W_T, whose columns are the tied embedding's); 46,498 distinct weights."""
    config = ModelConfig(cell="rhn", hidden_sizes=[830], depth=10, tie_weights=True, embedding_size=830)
    model = RNNLanguageModel(config, 10000)
    masks = component_masks(model, 0, 123)
    assert sum(int(m.sum()) for m in masks.values()) == 46_498
    memberships = sum(model.get_parameter(s.param).numel() // model.get_parameter(s.param).shape[s.dim] * s.blocks
                      for s in unit_slices(model) if not s.is_bias)
    assert memberships == 46_520
    assert masks["embedding.weight"][:, 123].all() and "decoder.weight" not in masks


@pytest.mark.parametrize("cell", ["rhn", "rhn_uncoupled"])
@pytest.mark.parametrize("tie", [False, True])
def test_zeroed_rhn_groups_compact_to_the_same_model(cell, tie):
    model = rhn_lm(cell, hidden=(10, 8), embedding=8 if tie else 7, tie=tie).eval()
    gen = torch.Generator().manual_seed(3)
    removed = [torch.randperm(h, generator=gen)[: h // 3].tolist() for h in (10, 8)]
    remove_units(model, removed)
    assert [int(z.sum()) for z in removable_units(model)] == [len(r) for r in removed]
    small = compact(model).eval()
    assert small.hidden_sizes == [10 - 3, 8 - 2] and small.layers[0].depth == 3
    tokens = torch.randint(0, 20, (9, 4), generator=gen)
    ours, _ = model(tokens, model.init_state(4))
    theirs, _ = small(tokens, small.init_state(4))
    torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell", ["rhn", "rhn_uncoupled"])
def test_rhn_stack_jacobian_equals_autograd(cell):
    model = rhn_lm(cell)
    layers = stack_params(model, torch.float64)
    gen = torch.Generator().manual_seed(5)
    states = [(0.5 * torch.randn(3, p.hidden_size, generator=gen, dtype=torch.float64), None) for p in layers]
    x = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    _, matrix = stack_jacobian(layers, states, x)

    def step(flat, sample):
        parts = [flat[:12].unsqueeze(0), flat[12:].unsqueeze(0)]
        new, _ = stack_step(layers, [(p, None) for p in parts], x[sample:sample + 1])
        return torch.cat([s for s, _ in new], 1)[0]

    for sample in range(3):
        flat = torch.cat([s[sample] for s, _ in states])
        expected = torch.autograd.functional.jacobian(lambda v: step(v, sample), flat)
        torch.testing.assert_close(matrix[sample], expected, atol=1e-6, rtol=0)
    jacobian = CELLS[cell].step(layers[0], states[0][0], None, x)[2]
    inputs = torch.autograd.functional.jacobian(
        lambda v: CELLS[cell].step(layers[0], states[0][0][:1], None, v.unsqueeze(0))[0][0], x[0])
    torch.testing.assert_close(jacobian.input_matrix()[0], inputs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("with_masks", [True, False])
@pytest.mark.parametrize("coupled", [True, False])
def test_fast_backward_equals_autograd_of_the_plain_loop(coupled, with_masks):
    gen = torch.Generator().manual_seed(7)
    hidden, gates, depth = 6, 2 if coupled else 3, 3
    xw = torch.randn(5, 4, gates * hidden, generator=gen, dtype=torch.float64, requires_grad=True)
    s0 = torch.randn(4, hidden, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = [(0.4 * torch.randn(gates * hidden, hidden, generator=gen, dtype=torch.float64)).requires_grad_()
               for _ in range(depth)]
    biases = [torch.randn(gates * hidden, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(depth)]
    masks = torch.bernoulli(torch.full((depth, 4, hidden), 0.7, dtype=torch.float64), generator=gen) / 0.7
    masks = masks if with_masks else None
    inputs = [xw, s0, *weights, *biases]
    results = []
    for fast in (True, False):
        outputs, last = (RHNSequence.apply(xw, s0, masks, coupled, *weights, *biases) if fast
                         else rhn_reference(xw, s0, weights, biases, masks, coupled))
        loss = (outputs * torch.linspace(-1, 1, outputs.numel(), dtype=torch.float64).view_as(outputs)).sum()
        loss = loss + last.pow(2).sum()
        results.append((outputs.detach(), torch.autograd.grad(loss, inputs)))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-12, rtol=0)
    for ours, theirs in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)
    for output in (0, 1):  # a loss on the outputs only, and on the last state only
        assert torch.autograd.gradcheck(
            lambda *p: RHNSequence.apply(p[0], p[1], masks, coupled, *p[2:])[output].sum(), inputs, eps=1e-6, atol=1e-5)


def test_sparse_training_keeps_its_invariants_on_rhn_weights(synthetic_corpus):
    config = tiny_config(model={"cell": "rhn", "depth": 2, "hidden_sizes": [24, 24]},
                         sparsity={"method": "rigl", "density": 0.33, "update_every": 4},
                         optim={"momentum": 0.9, "lr": 2.0}, data={"epoch_tokens": 8 * 10 * 12}, train={"epochs": 1})
    trainer = Trainer(config, synthetic_corpus)
    masking = trainer.sparsifier.masking
    assert {"layers.0.weight_hh_0", "layers.0.weight_hh_1", "layers.0.weight_ih"} <= set(masking.params)
    target = masking.nonzero_count()
    counts = []

    def check(t):
        counts.append(masking.nonzero_count())
        assert_masked_zero(t)

    check_after_every_step(trainer, check)
    trainer.fit()
    assert set(counts) == {target} and trainer.sparsifier.updates >= 2


def test_an_rhn_language_model_trains_resumes_and_learns_its_width_with_iss(synthetic_corpus, tmp_path):
    model = {"cell": "rhn", "depth": 3, "hidden_sizes": [32], "embedding_size": 32, "tie_weights": True,
             "dropout": 0.2, "variational_dropout": True, "recurrent_dropout": 0.2}
    config = tiny_config(model=model, optim={"lr": 2.0}, data={"epoch_tokens": 8 * 10 * 12},
                         train={"epochs": 2, "checkpoint_every": 5},
                         sparsity={"method": "iss", "target_units": [20], "target_epoch": 1})
    straight = Trainer(config, synthetic_corpus, tmp_path / "a")
    untrained = straight.task.evaluate(straight.model, "valid")["ppl"]
    result = straight.fit()
    assert result["val_ppl"] < 0.8 * untrained  # it learned something
    assert straight.sparsifier.kept() == [20]
    train_until_interrupted(config, synthetic_corpus, tmp_path / "b")
    resumed = Trainer(config, synthetic_corpus, tmp_path / "b", resume=True)
    resumed.fit()
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)
    small = compact(straight.model).eval()
    assert small.hidden_sizes == [20] and small.embedding_size == 20


def test_cell_options_are_refused_by_cells_that_do_not_read_them():
    with pytest.raises(ValueError, match="depth is not used by cell lstm"):
        ModelConfig(cell="lstm", depth=3)
    with pytest.raises(ValueError, match="recurrent_dropout is not used by cell gru"):
        ModelConfig(cell="gru", recurrent_dropout=0.2)


@pytest.mark.parametrize("preset", ["rhn-cpu", "rhn-paper", "gru-small", "rnn-small", "awd-lstm-cpu", "awd-sparse-cpu",
                                    "awd-lstm", "awd-sparse"])
def test_cell_presets_train_end_to_end(preset, synthetic_dir, tmp_path):
    """Each cell's preset trains, saves and evaluates through the CLI (budgets cut to seconds)."""
    from conftest import cli_in_process

    width = (["--hidden", "16", "--embedding-size", "16"] if preset.startswith("rhn") else
             ["--hidden", "16,24,16", "--embedding-size", "16", "--eval-batch-size", "4"] if preset.startswith("awd")
             else ["--hidden", "16,16"])
    result = cli_in_process("train", "--preset", preset, "--data-dir", synthetic_dir, *width, "--epochs", "1",
                            "--epoch-tokens", "1400", "--batch-size", "4", "--device", "cpu",
                            "--out", tmp_path / preset)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / preset / "results.json").is_file()
    shown = cli_in_process("eval", tmp_path / preset, "--split", "valid")
    assert shown.returncode == 0 and "ppl" in shown.stdout.lower(), shown.stderr


def test_hyperprune_searches_an_rhn(synthetic_dir, tmp_path):
    import json

    from conftest import cli_in_process

    result = cli_in_process(
        "hyperprune", "--preset", "rhn-cpu", "--data-dir", synthetic_dir, "--epochs", "2",
        "--set", "model.hidden_sizes=[16]", "--set", "model.embedding_size=16", "--set", "model.depth=2",
        "--set", "data.epoch_tokens=600", "--set", "data.batch_size=8", "--set", "data.eval_batch_size=4",
        "--set", "data.bptt=10", "--set", "train.device=cpu", "--n", "4", "--survivors", "1", "--k", "8",
        "--samples", "2", "--steps", "10", "--e0", "1", "--out", tmp_path / "search")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "search" / "report.json").read_text())
    assert report["winner"] and report["winner_config"]["model"]["cell"] == "rhn"
    assert report["test"]["test_ppl"] > 1


def test_the_fast_layer_runs_under_autocast_in_the_projections_dtype():
    torch.manual_seed(0)
    layer = RecurrentHighway(16, 16, depth=3, recurrent_dropout=0.2)
    x, state = torch.randn(5, 4, 16), torch.zeros(1, 4, 16)
    torch.manual_seed(1)
    exact = layer(x, state)[0]
    exact.sum().backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)  # the same dropout masks
        low = layer(x, state)[0]
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), exact, atol=2e-2, rtol=0)
    low.float().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad.dtype == torch.float32
        torch.testing.assert_close(p.grad, grads[name], atol=0.03 * float(grads[name].abs().max()), rtol=0)
