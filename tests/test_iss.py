"""ISS group maps, group Lasso and compaction."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from sparsernn.config import ModelConfig
from sparsernn.models import RNNLanguageModel, SequenceTagger
from sparsernn.sparsity.iss import EPSILON, compact, component_masks, group_sq_norms, removable_units
from sparsernn.sparsity.lasso import GroupLasso
from sparsernn.runs import load_model, save_model
from sparsernn.train import Trainer

from conftest import cli_in_process, tiny_config


def component_size(model, layer: int, unit: int) -> int:
    return sum(int(m.sum()) for m in component_masks(model, layer, unit).values())


def test_component_sizes_match_the_formula_for_the_papers_2x1500_model():
    model = RNNLanguageModel(ModelConfig(hidden_sizes=[1500, 1500]), vocab_size=10000)
    # 4i + 8h - 4 + receiver rows: 4h' for the next LSTM layer, V for the decoder
    assert component_size(model, 0, 17) == 4 * 1500 + 8 * 1500 - 4 + 4 * 1500 == 23996
    assert component_size(model, 1, 1499) == 4 * 1500 + 8 * 1500 - 4 + 10000 == 27996


@pytest.mark.parametrize("cell,gates", [("lstm", 4), ("gru", 3), ("rnn_tanh", 1)])
def test_component_holds_exactly_the_weights_tied_to_the_unit(cell, gates):
    model = RNNLanguageModel(ModelConfig(cell=cell, hidden_sizes=[7, 5], embedding_size=6), vocab_size=11)
    i, h, h2 = 6, 7, 5
    assert component_size(model, 0, 3) == gates * i + 2 * gates * h - gates + gates * h2
    masks = component_masks(model, 0, 3)
    w_hh = masks["layers.0.weight_hh_l0"].view(gates, h, h)
    expected = torch.zeros(gates, h, h, dtype=torch.bool)
    expected[:, 3, :] = True  # gate rows of unit 3
    expected[:, :, 3] = True  # column 3
    assert torch.equal(w_hh, expected)
    assert masks["layers.0.weight_ih_l0"].view(gates, h, i)[:, 3].all()
    assert masks["layers.0.weight_ih_l0"].sum() == gates * i
    receiver = masks["layers.1.weight_ih_l0"]
    assert receiver[:, 3].all() and receiver.sum() == gates * h2
    assert set(masks) == {"layers.0.weight_ih_l0", "layers.0.weight_hh_l0", "layers.1.weight_ih_l0"}
    # the decoder receives the last layer
    last = component_masks(model, 1, 0)
    assert last["decoder.weight"][:, 0].all() and last["decoder.weight"].sum() == 11


def test_bidirectional_component_is_the_unit_in_both_directions_with_both_receiver_columns():
    model = SequenceTagger(ModelConfig(hidden_sizes=[6, 4], embedding_size=5), vocab_size=9, num_tags=3)
    masks = component_masks(model, 0, 2)
    for direction in ("", "_reverse"):
        assert masks[f"layers.0.weight_ih_l0{direction}"].view(4, 6, 5)[:, 2].all()
        next_ih = masks[f"layers.1.weight_ih_l0{direction}"]  # reads [forward 6, backward 6]
        assert next_ih[:, 2].all() and next_ih[:, 8].all() and next_ih.sum() == 2 * 16
    assert component_size(model, 0, 2) == 2 * (4 * 5 + 8 * 6 - 4) + 2 * 2 * 16


def test_group_norms_count_each_weight_once():
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(hidden_sizes=[7, 5], embedding_size=6), vocab_size=11).double()
    norms = group_sq_norms(model)
    for layer, size in enumerate((7, 5)):
        for unit in range(size):
            explicit = sum(float(model.get_parameter(n).detach()[m].pow(2).sum())
                           for n, m in component_masks(model, layer, unit).items())
            assert float(norms[layer][unit]) == pytest.approx(explicit, rel=1e-12)


def remove_units(model, units_per_layer):
    with torch.no_grad():
        for layer, units in enumerate(units_per_layer):
            for unit in units:
                for name, mask in component_masks(model, layer, unit).items():
                    model.get_parameter(name)[mask] = 0.0


@pytest.mark.parametrize("kind", ["lstm-stack", "gru-stack", "rnn-stack", "bilstm-tagger", "bigru-tagger"])
def test_compacted_model_equals_the_zeroed_model(kind):
    torch.manual_seed(1)
    cell = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh", "bilstm": "lstm", "bigru": "gru"}[kind.split("-")[0]]
    config = ModelConfig(cell=cell, hidden_sizes=[12, 9, 10], embedding_size=8, init_range=0.3)
    model = (SequenceTagger(config, 30, 6) if "tagger" in kind else RNNLanguageModel(config, 30)).double().eval()
    generator = torch.Generator().manual_seed(2)
    removed = [torch.randperm(h, generator=generator)[: h // 3].tolist() for h in (12, 9, 10)]
    remove_units(model, removed)
    assert [int(z.sum()) for z in removable_units(model)] == [len(r) for r in removed]
    small = compact(model).eval()
    assert small.hidden_sizes == [12 - 4, 9 - 3, 10 - 3]
    assert all(isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)) for m in small.layers)
    tokens = torch.randint(0, 30, (15, 4), generator=generator)
    if "tagger" in kind:
        torch.testing.assert_close(small(tokens), model(tokens), atol=1e-5, rtol=0)
    else:
        ours, _ = model(tokens, model.init_state(4))
        theirs, _ = small(tokens, small.init_state(4))
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_compacted_checkpoint_loads_into_plain_pytorch_modules(tmp_path):
    torch.manual_seed(3)
    model = RNNLanguageModel(ModelConfig(hidden_sizes=[10, 8], embedding_size=6), 20).eval()
    remove_units(model, [[0, 4, 9], [2]])
    small = compact(model)
    save_model(tmp_path / "small.safetensors", small, {"kind": "language-model"})
    weights = {k.removeprefix("model."): v for k, v in load_file(tmp_path / "small.safetensors").items()}
    embedding = nn.Embedding(20, 6)
    lstm1, lstm2 = nn.LSTM(6, 7), nn.LSTM(7, 7)
    decoder = nn.Linear(7, 20)
    embedding.load_state_dict({"weight": weights["embedding.weight"]})
    for n, lstm in enumerate((lstm1, lstm2)):
        lstm.load_state_dict({k.removeprefix(f"layers.{n}."): v for k, v in weights.items() if k.startswith(f"layers.{n}.")})
    decoder.load_state_dict({"weight": weights["decoder.weight"], "bias": weights["decoder.bias"]})
    tokens = torch.randint(0, 20, (5, 2))
    plain = decoder(lstm2(lstm1(embedding(tokens))[0])[0])
    zeros = [torch.zeros(1, 2, 10), torch.zeros(1, 2, 8)]
    ours, _ = model(tokens, [(z, z.clone()) for z in zeros])
    torch.testing.assert_close(plain, ours, atol=1e-5, rtol=0)


def test_group_lasso_gradient_equals_autograd_of_the_regulariser():
    torch.manual_seed(4)
    model = RNNLanguageModel(ModelConfig(hidden_sizes=[6, 5], embedding_size=4), 9).double()
    lasso = GroupLasso([0.3, 0.7], update="subgradient")
    lasso.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    lasso.after_backward()
    added = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    reg = 0
    for layer, (size, lam) in enumerate(zip((6, 5), (0.3, 0.7))):
        for unit in range(size):
            sq = sum((model.get_parameter(n)[m] ** 2).sum() for n, m in component_masks(model, layer, unit).items())
            reg = reg + lam * torch.sqrt(EPSILON + sq)
    reg.backward()
    for name, p in model.named_parameters():
        expected = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(added[name], expected, atol=1e-12, rtol=1e-9)


def test_thresholding_keeps_zeroed_groups_at_zero(synthetic_corpus):
    config = tiny_config(sparsity={"method": "iss", "lasso_lambda": 1e-4, "lasso_update": "subgradient"},
                         train={"epochs": 1},
                         data={"epoch_tokens": 8 * 10 * 30})
    trainer = Trainer(config, synthetic_corpus)
    removed = [[1, 5], [0]]
    remove_units(trainer.model, removed)
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    zero = removable_units(trainer.model)
    assert zero[0][[1, 5]].all() and zero[1][0].all()  # gradients and the lasso term never revived them
    inside: dict[str, torch.Tensor] = {}
    for layer, units in enumerate(removed):
        for unit in units:
            for name, mask in component_masks(trainer.model, layer, unit).items():
                inside[name] = inside.get(name, torch.zeros_like(mask)) | mask
    for name, mask in inside.items():  # training moved (nearly) every other weight of those matrices
        moved = trainer.model.get_parameter(name).detach() != start[name]
        assert moved[~mask].float().mean() > 0.9, name


def test_strong_group_lasso_removes_components_and_compaction_is_exact(synthetic_corpus, tmp_path):
    config = tiny_config(sparsity={"method": "iss", "lasso_lambda": [0.003, 0.003], "zero_threshold": 2e-3,
                                           "lasso_update": "subgradient"},
                         train={"epochs": 2}, data={"epoch_tokens": 8 * 10 * 40})
    trainer = Trainer(config, synthetic_corpus, tmp_path)
    trainer.fit()
    sizes = [int((~z).sum()) for z in removable_units(trainer.model)]
    assert sizes[0] < 32 or sizes[1] < 32
    model, *_ = load_model(tmp_path / "best.safetensors")
    small = compact(model)
    tokens = synthetic_corpus.valid[:40].view(10, 4)
    ours, _ = model.double()(tokens, model.init_state(4))
    small = small.double()
    theirs, _ = small(tokens, small.init_state(4))
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell, extra", [("rhn", ["--depth", "2"]), ("lstm", [])])
def test_tied_iss_runs_with_an_explicit_embedding_size_compact_from_the_command_line(synthetic_dir, tmp_path, cell,
                                                                                      extra):
    """The RHN presets name model.embedding_size and tie weights; compacting such a run rebuilds a config
    whose embedding shrinks with the last layer (the two sizes validated together, not one at a time)."""
    run, small = tmp_path / "run", tmp_path / "small.safetensors"
    trained = cli_in_process("train", "--data-dir", synthetic_dir, "--cell", cell, *extra, "--hidden", "24",
                             "--embedding-size", "24", "--tie-weights", "--batch-size", "8", "--bptt", "10",
                             "--epochs", "2", "--epoch-tokens", "800", "--method", "iss", "--target-units", "10",
                             "--device", "cpu", "--out", run)
    assert trained.returncode == 0, trained.stderr
    compacted = cli_in_process("compact", run, "-o", small)
    assert compacted.returncode == 0, compacted.stderr
    model, config, _, _ = load_model(run)
    smaller, small_config, _, meta = load_model(small)
    assert smaller.hidden_sizes == [10] and small_config.model.hidden_sizes == [10]
    assert small_config.model.embedding_size == 10 and small_config.model.tie_weights
    assert small_config.sparsity.method == "dense" and meta["compacted_from"] == str(run / "best.safetensors")
    assert smaller.embedding.weight.shape[1] == 10 and smaller.decoder.weight.data_ptr() == \
        smaller.embedding.weight.data_ptr()
    tokens = torch.randint(0, model.vocab_size, (12, 3), generator=torch.Generator().manual_seed(0))
    model.eval(), smaller.eval()
    with torch.inference_mode():
        expected = model(tokens, model.init_state(3))[0]
        assert torch.allclose(smaller(tokens, smaller.init_state(3))[0], expected, atol=1e-5)


def test_a_fixed_lambda_that_removes_a_whole_layer_stops_the_run_where_it_happens(synthetic_dir, tmp_path):
    run = tmp_path / "run"
    result = cli_in_process("train", "--data-dir", synthetic_dir, "--hidden", "16,16", "--batch-size", "8",
                            "--bptt", "10", "--epochs", "2", "--epoch-tokens", "2000", "--method", "iss",
                            "--lasso-lambda", "1.0,0", "--device", "cpu", "--out", run)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "best epoch" not in result.stdout
    line = result.stderr.strip().splitlines()[-1]
    # lr 10 x lambda 1 shrinks every component of layer 0 to zero in the first proximal step
    assert line.startswith("error: epoch 1, step 1: lasso_lambda 1 removed all 16 units of recurrent layer 0 "
                           "(regulariser step 1)")
    assert "--target-units / --target-multiply-adds" in line and "no checkpoint was saved before" in line
    failed = json.loads((run / "failed.json").read_text())
    assert (failed["epoch"], failed["step"]) == (1, 1) and "recurrent layer 0" in failed["reason"]
