"""Group Lasso that learns small structures: the proximal step, removed state, targets, tied weights,
the zeroing threshold, fine-tuning and the structure plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sparsernn.config import ModelConfig
from sparsernn.models import RNNLanguageModel
from sparsernn.runs import LAST, load_model
from sparsernn.sparsity.iss import (
    compact,
    component_masks,
    group_sq_norms,
    recurrent_multiply_adds,
    removable_units,
    units_for_multiply_adds,
    zero_lines,
)
from sparsernn.sparsity.lasso import GroupLasso, group_soft_threshold, scheduled_units, soft_threshold, zeroing_threshold
from sparsernn.train import Trainer

from conftest import cli_in_process, tiny_config, train_until_interrupted
from figures import record_figures
from test_iss import remove_units


def lm(hidden, embedding=None, tie=False, seed=0, vocab=13):
    torch.manual_seed(seed)
    config = ModelConfig(hidden_sizes=hidden, embedding_size=embedding, tie_weights=tie, init_range=0.3)
    return RNNLanguageModel(config, vocab).double()


def test_group_soft_threshold_is_the_closed_form_prox():
    norms = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    assert group_soft_threshold(norms, 1.0).tolist() == [0.0, 0.0, 0.0, 0.5, 0.75]
    # the prox of t*||.|| at v minimises 0.5||w - v||^2 + t||w||: check against a direct minimisation
    v = torch.tensor([0.3, -1.2, 0.9], dtype=torch.float64)
    w = (v * group_soft_threshold(v.norm().unsqueeze(0), 0.4)).requires_grad_(False)
    objective = lambda x: 0.5 * (x - v).pow(2).sum() + 0.4 * x.norm()  # noqa: E731
    for _ in range(50):
        probe = w + 1e-3 * torch.randn(3, dtype=torch.float64)
        assert objective(probe) >= objective(w) - 1e-12
    x = torch.tensor([-0.5, -0.1, 0.0, 0.05, 0.3])
    assert soft_threshold(x, 0.1).tolist() == pytest.approx([-0.4, 0.0, 0.0, 0.0, 0.2])


def test_proximal_step_on_disjoint_components_equals_the_group_soft_threshold():
    """One layer with W_hh zero: no weight is in two components (W_ih's rows, the decoder's columns),
    so the proximal step must be exactly the closed-form group soft-threshold of every component,
    computed here from explicit masks."""
    model = lm([6], embedding=4)
    with torch.no_grad():
        model.layers[0].weight_hh_l0.zero_()
    lasso = GroupLasso(0.3, threshold=0.0, update="proximal")
    lasso.attach(model, torch.optim.SGD(model.parameters(), lr=0.5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lasso.layer_lambdas[0] = float(sorted(group_sq_norms(model)[0].sqrt().tolist())[1]) / 0.5 + 1e-9
    lam = float(lasso.layer_lambdas[0])
    expected = {n: p.clone() for n, p in before.items()}
    for unit in range(6):
        masks = component_masks(model, 0, unit)
        norm = math.sqrt(sum(float(before[n][m].pow(2).sum()) for n, m in masks.items()))
        factor = max(0.0, 1.0 - 0.5 * lam / norm)
        for n, m in masks.items():
            expected[n][m] = before[n][m] * factor
    lasso.after_step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], atol=1e-12, rtol=0)
    assert lasso.kept() == [4]  # the two components under lr * lambda are gone


def test_proximal_step_zeroes_whole_overlapping_components_and_counts_shared_entries_once():
    model = lm([6, 5], embedding=4)
    lasso = GroupLasso([0.3, 0.3], threshold=0.0, update="proximal")
    lasso.attach(model, torch.optim.SGD(model.parameters(), lr=1.0))
    norms = [sq.sqrt() for sq in group_sq_norms(model)]
    step = float(norms[0].sort().values[2]) + 1e-9  # the three smallest components of layer 1 fall below it
    lasso.layer_lambdas[:] = step
    lasso.after_step()
    assert int(removable_units(model)[0].sum()) == 3 and lasso.kept()[0] == 3
    w_hh = model.layers[0].weight_hh_l0.detach().view(4, 6, 6)
    gone, kept = lasso.removed[0], ~lasso.removed[0]
    a, b = kept.nonzero()[0, 0], kept.nonzero()[1, 0]
    factor = lambda k: 1 - step / float(norms[0][k])  # noqa: E731
    # an entry in two kept components shrinks by both factors, a diagonal entry by its own once
    assert float(w_hh[1, a, b]) == pytest.approx(float(before_hh(model, lasso)[1, a, b]) * factor(a) * factor(b))
    assert float(w_hh[2, a, a]) == pytest.approx(float(before_hh(model, lasso)[2, a, a]) * factor(a))
    assert (w_hh[:, gone] == 0).all() and (w_hh[:, :, gone] == 0).all()


def before_hh(model, lasso):
    torch.manual_seed(0)  # the same initial weights as lm([6, 5], embedding=4)
    return lm([6, 5], embedding=4).layers[0].weight_hh_l0.detach().view(4, 6, 6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "nt_asgd"])
def test_removed_components_stay_zero_in_weights_and_optimizer_state(synthetic_corpus, optimizer):
    optim = {"sgd": {"name": "sgd", "momentum": 0.9, "lr": 1.0}, "adam": {"name": "adam", "lr": 3e-3},
             "nt_asgd": {"name": "nt_asgd", "lr": 5.0, "nonmono": 1}}[optimizer]
    config = tiny_config(sparsity={"method": "iss", "target_units": [20, 16], "target_epoch": 1},
                         optim=optim, train={"epochs": 3}, data={"epoch_tokens": 8 * 10 * 25})
    trainer = Trainer(config, synthetic_corpus)
    if optimizer == "nt_asgd":
        trainer.optimizer.averaging = True  # average from the first step, so the averages are exercised
    seen: list[list[torch.Tensor]] = []

    def check(record):
        removed = [r.clone() for r in trainer.sparsifier.removed]
        for earlier, now in zip(seen[-1] if seen else [], removed):
            assert (now | ~earlier).all()  # what was removed stays removed
        seen.append(removed)
        zero = removable_units(trainer.model)
        assert all(bool(z[r].all()) for z, r in zip(zero, removed))
        for layer, r in enumerate(removed):
            for unit in r.nonzero().squeeze(1).tolist()[:4]:
                for name, mask in component_masks(trainer.model, layer, unit).items():
                    p = trainer.model.get_parameter(name)
                    assert (p.detach()[mask] == 0).all()
                    for key, value in trainer.optimizer.state[p].items():
                        if torch.is_tensor(value) and value.shape == p.shape:
                            assert (value[mask] == 0).all(), (name, key)

    trainer.fit(on_epoch=check)
    assert trainer.sparsifier.kept() == [20, 16]
    assert len(seen) == 3


def test_kept_component_target_is_reached_by_the_controller(synthetic_corpus):
    config = tiny_config(sparsity={"method": "iss", "target_units": [12, 20], "target_epoch": 2},
                         train={"epochs": 3}, data={"epoch_tokens": 8 * 10 * 40})
    trainer = Trainer(config, synthetic_corpus)
    trainer.fit()
    kept = [int((~z).sum()) for z in removable_units(trainer.model)]
    for got, target in zip(kept, (12, 20)):
        assert abs(got - target) <= 0.05 * target
    # the controller did all of it, following the schedule (half-way: the cubic's 7/8 of the removals)
    assert trainer.sparsifier.forced == 0
    halfway = trainer.history[0]["iss_sizes"]
    for got, target in zip(halfway, (12, 20)):
        assert abs(got - scheduled_units(32, target, 40, 80)) <= 1
    assert trainer.history[-1]["iss_sizes"] == kept
    assert trainer.history[-1]["iss_lambdas"] == [0.0, 0.0]  # at the target: no more pressure


def test_multiply_add_target_narrows_every_layer_alike():
    model = lm([40, 30], embedding=20)
    sizes = units_for_multiply_adds(model, 0.25)
    dense = recurrent_multiply_adds(model, [40, 30])
    assert recurrent_multiply_adds(model, sizes) / dense == pytest.approx(0.25, abs=0.03)
    assert sizes[0] / 40 == pytest.approx(sizes[1] / 30, abs=0.05)
    assert scheduled_units(100, 25, 0, 10) == 100 and scheduled_units(100, 25, 10, 10) == 25
    assert 25 < scheduled_units(100, 25, 5, 10) < 100


@pytest.mark.parametrize("hidden", [[8], [9, 8]])
def test_tied_weight_components_take_the_embedding_column_and_compaction_is_exact(hidden):
    model = lm(hidden, embedding=hidden[-1], tie=True, vocab=17).eval()
    last = len(hidden) - 1
    masks = component_masks(model, last, 3)
    assert masks["embedding.weight"][:, 3].all() and masks["embedding.weight"].sum() == 17
    assert masks["layers.0.weight_ih_l0"][:, 3].all()  # the first layer reads embedding dimension 3
    assert "decoder.weight" not in masks  # the same tensor as the embedding, counted once
    gen = torch.Generator().manual_seed(1)
    removed = [torch.randperm(h, generator=gen)[: h // 3].tolist() for h in hidden]
    remove_units(model, removed)
    assert [int(z.sum()) for z in removable_units(model)] == [len(r) for r in removed]
    small = compact(model).eval()
    assert small.decoder.weight is small.embedding.weight and small.embedding_size == small.hidden_sizes[-1]
    tokens = torch.randint(0, 17, (12, 3), generator=gen)
    ours, _ = model(tokens, model.init_state(3))
    theirs, _ = small(tokens, small.init_state(3))
    torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0)
    norms = group_sq_norms(model)  # each tied weight counted once: the explicit sum over masks agrees
    explicit = sum(float(model.get_parameter(n).detach()[m].pow(2).sum()) for n, m in masks.items())
    assert float(norms[last][3]) == pytest.approx(explicit, rel=1e-12) or 3 in removed[last]


def test_a_steered_iss_run_resumes_bit_for_bit(synthetic_corpus, tmp_path):
    config = tiny_config(sparsity={"method": "iss", "target_units": [16], "target_epoch": 1},
                         data={"epoch_tokens": 8 * 10 * 12}, train={"epochs": 2, "checkpoint_every": 5})
    straight = Trainer(config, synthetic_corpus, tmp_path / "a")
    straight.fit()
    train_until_interrupted(config, synthetic_corpus, tmp_path / "b")
    resumed = Trainer(config, synthetic_corpus, tmp_path / "b", resume=True)
    resumed.fit()
    assert resumed.sparsifier.layer_lambdas.tolist() == straight.sparsifier.layer_lambdas.tolist()
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_run_of_version_0_2_resumes_with_the_subgradient_update(synthetic_corpus, tmp_path):
    from sparsernn import checkpoint

    config = tiny_config(sparsity={"method": "iss", "lasso_lambda": 1e-4, "lasso_update": "subgradient"},
                         data={"epoch_tokens": 8 * 10 * 6}, train={"epochs": 2})
    Trainer(config, synthetic_corpus, tmp_path).fit(until_epoch=1)
    tensors, meta = checkpoint.load(tmp_path / LAST)
    del meta["config"]["sparsity"]["lasso_update"]  # as 0.2 wrote it
    checkpoint.save(tmp_path / LAST, tensors, json.loads(json.dumps(meta)))
    resumed = Trainer.open(tmp_path, synthetic_corpus)
    assert resumed.config.sparsity.lasso_update == "subgradient" and resumed.sparsifier.update == "subgradient"


def test_zeroing_threshold_is_the_largest_that_keeps_the_score():
    model = lm([6], embedding=4)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    iss_weights = ("layers.0.weight_ih_l0", "layers.0.weight_hh_l0", "decoder.weight")
    # a score that worsens as soon as a weight of magnitude >= 0.05 is zeroed
    edge = min(float(weights[n].abs()[weights[n].abs() >= 0.05].min()) for n in iss_weights)

    def score(m):
        lost = any(bool(((weights[n].abs() >= 0.05) & (m.get_parameter(n) == 0)).any()) for n in iss_weights)
        return 150.0 if lost else 100.0

    tau, trials = zeroing_threshold(model, score, margin=0.01)
    assert 0.99 * edge < tau <= edge and trials[0] == {"tau": 0.0, "zeroed": 0.0, "score": 100.0}
    assert all(t["score"] == 100.0 for t in trials if t["tau"] <= tau)
    assert any(t["score"] == 150.0 for t in trials)
    for name, p in model.named_parameters():  # restored
        assert torch.equal(p.detach(), weights[name])


def test_fine_tuning_a_trained_model_with_a_target_then_compacting(synthetic_dir, tmp_path, monkeypatch):
    tiny = ["--data-dir", str(synthetic_dir), "--hidden", "24,24", "--batch-size", "8", "--bptt", "10",
            "--epoch-tokens", "2400", "--device", "cpu", "--lr", "10"]
    dense = cli_in_process("train", *tiny, "--epochs", "1", "--out", str(tmp_path / "dense"))
    assert dense.returncode == 0, dense.stderr
    tau = cli_in_process("iss", "tau", str(tmp_path / "dense"), "--margin", "0.02")
    assert tau.returncode == 0, tau.stderr
    assert "tau = " in tau.stdout
    tuned = cli_in_process("train", *tiny, "--epochs", "2", "--init-from", str(tmp_path / "dense" / "best.safetensors"),
                           "--method", "iss", "--target-units", "12", "--target-epoch", "1",
                           "--out", str(tmp_path / "tuned"))
    assert tuned.returncode == 0, tuned.stderr
    small = cli_in_process("compact", str(tmp_path / "tuned"), "-o", str(tmp_path / "small.safetensors"))
    assert small.returncode == 0, small.stderr
    model, *_ = load_model(tmp_path / "small.safetensors")
    assert model.hidden_sizes == [12, 12]
    before = cli_in_process("eval", str(tmp_path / "tuned"), "--split", "valid")
    after = cli_in_process("eval", str(tmp_path / "small.safetensors"), "--split", "valid")
    number = lambda text: [w for w in text.split() if w.replace(".", "").isdigit()][-1]  # noqa: E731
    assert number(before.stdout) == number(after.stdout)  # the compacted model computes the same perplexity
    drawn = record_figures(monkeypatch)
    plots = cli_in_process("iss", "plot", str(tmp_path / "tuned"))
    assert plots.returncode == 0, plots.stderr
    assert "zero rows" in plots.stdout
    assert list(drawn) == ["zero_pattern.png", "group_norms.png", "group_norms_over_epochs.png",
                           "zero_rows_columns.png"]
    assert all(figure.path.parent == tmp_path / "tuned" / "plots" for figure in drawn.values())
    # what they draw: the best model's non-zero weights, component norms (final and per epoch), zero lines
    tuned, *_ = load_model(tmp_path / "tuned")
    matrices = [f"layers.{n}.weight_{kind}_l0" for n in (0, 1) for kind in ("ih", "hh")]
    for panel, name in zip(drawn["zero_pattern.png"].panels, matrices, strict=True):
        assert (panel.images[0] == (tuned.get_parameter(name).detach() != 0).float().numpy()).all(), name
    for bars, sq in zip(drawn["group_norms.png"].panel.bars, group_sq_norms(tuned), strict=True):
        counts, _ = np.histogram(sq.clamp_min(0).sqrt().numpy(), bins=50)
        assert bars.heights.tolist() == counts.tolist()
    records = [json.loads(line) for line in (tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()
               if "iss_norms" in line]
    assert [r["epoch"] for r in records] == [1, 2]
    for n, panel in enumerate(drawn["group_norms_over_epochs.png"].panels):
        assert panel.title == f"layer {n + 1}: 12 of 24 components kept"  # the target, reached by epoch 1
        assert [line.y.tolist() for line in panel.lines] == [[r["iss_norms"][n][k] for r in records]
                                                             for k in range(24)]
        assert all(line.x.tolist() == [1, 2] for line in panel.lines)
    lines = zero_lines(tuned)
    rows, columns = drawn["zero_rows_columns.png"].panel.bars
    assert rows.heights.tolist() == [lines[m]["zero_rows"] / lines[m]["rows"] for m in matrices]
    assert columns.heights.tolist() == [lines[m]["zero_columns"] / lines[m]["columns"] for m in matrices]
    assert lines["layers.0.weight_hh_l0"]["zero_columns"] == 12  # the 12 removed units of layer 0


def test_one_value_or_one_per_layer():
    from sparsernn.validation import per_layer

    assert per_layer(0.5, 3, "lambdas") == [0.5, 0.5, 0.5]
    assert per_layer([7], 2, "unit targets") == [7, 7]
    assert per_layer((1, 2), 2, "unit targets") == [1, 2]
    with pytest.raises(ValueError, match="3 unit targets for 2 recurrent layers"):
        per_layer([1, 2, 3], 2, "unit targets")
