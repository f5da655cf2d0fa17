"""Invariants of sparse training, checked through real training steps on a small LM."""

from __future__ import annotations

import pytest
import torch

from sparsernn.optim import NTASGD
from sparsernn.sparsity.masks import Masking, prunable_parameters
from sparsernn.runs import BEST, LAST, load_model
from sparsernn.train import Trainer

from conftest import tiny_config, train_until_interrupted

DYNAMIC = ["set", "rigl", "snfs", "dsr", "selfish"]


def sparse_config(method: str, **extra):
    sparsity = {"method": method, "density": 0.33, **({"update_every": 4} if method != "static" else {}), **extra}
    optim = {"momentum": 0.9} if method != "selfish" else {"name": "nt_asgd"}  # Selfish-RNN's SNT-ASGD
    return tiny_config(data={"epoch_tokens": 8 * 10 * 20}, sparsity=sparsity, optim=optim,
                       train={"epochs": 2, "checkpoint_every": 5})


def check_after_every_step(trainer: Trainer, check) -> None:
    step = trainer.sparsifier.after_step

    def checked():
        step()
        check(trainer)

    trainer.sparsifier.after_step = checked


def assert_masked_zero(trainer: Trainer) -> None:
    masking = trainer.sparsifier.masking
    for name, param in masking.params.items():
        mask = masking.masks[name]
        assert not param[~mask].any(), name
        for key, value in trainer.optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                assert not value[~mask].any(), f"{name} optimizer state {key}"


@pytest.mark.parametrize("method", ["static", *DYNAMIC])
def test_non_zero_count_stays_at_target_and_masked_weights_and_state_are_zero(method, synthetic_corpus):
    trainer = Trainer(sparse_config(method), synthetic_corpus)
    masking = trainer.sparsifier.masking
    target = masking.nonzero_count()
    assert target == round(0.33 * masking.total_count())
    first_masks = {n: m.clone() for n, m in masking.masks.items()}
    counts = []

    def check(t):
        counts.append(masking.nonzero_count())
        assert_masked_zero(t)

    check_after_every_step(trainer, check)
    trainer.fit()
    assert set(counts) == {target}  # exactly, after every step including every prune/regrow
    changed = any(not torch.equal(first_masks[n], m) for n, m in masking.masks.items())
    assert changed == (method != "static")
    if method != "static":
        assert trainer.sparsifier.updates >= 5


def test_adam_moments_are_zeroed_at_masked_positions(synthetic_corpus):
    config = sparse_config("rigl")
    config.optim.name = "adam"
    config.optim.lr = 0.003
    trainer = Trainer(config, synthetic_corpus)
    check_after_every_step(trainer, assert_masked_zero)
    trainer.fit()
    param = next(iter(trainer.sparsifier.masking.params.values()))
    assert {"exp_avg", "exp_avg_sq"} <= set(trainer.optimizer.state[param])


def test_gmp_goes_from_dense_to_the_target_on_the_cubic_schedule(synthetic_corpus):
    config = sparse_config("gmp", update_every=2, start_epoch=1, end_epoch=2)
    trainer = Trainer(config, synthetic_corpus)
    masking = trainer.sparsifier.masking
    assert masking.density() == 1.0
    counts = []
    check_after_every_step(trainer, lambda t: (counts.append(masking.nonzero_count()), assert_masked_zero(t)))
    trainer.fit()
    assert all(a >= b for a, b in zip(counts, counts[1:]))  # masks only shrink
    assert counts[-1] == round(0.33 * masking.total_count())
    halfway = counts[trainer.steps_per_epoch - 1] / masking.total_count()
    assert halfway == pytest.approx(1 - 0.67 * (1 - 0.5**3), abs=0.02)  # cubic: most pruning early


def test_rigl_regrows_where_the_dense_gradient_is_largest(synthetic_corpus):
    trainer = Trainer(sparse_config("rigl", update_every=10**6), synthetic_corpus)
    sparsifier = trainer.sparsifier
    trainer.train_step(1, 0)
    name = "layers.0.weight_hh_l0"
    param, before = sparsifier.masking.params[name], sparsifier.masking.masks[name].clone()
    grad = param.grad.clone()
    sparsifier.update(0.2)
    after = sparsifier.masking.masks[name]
    grown = after & ~before
    assert grown.any()
    # every newly grown position has a larger |grad| than any inactive position left behind
    assert grad.abs()[grown].min() >= grad.abs()[~after].max()
    assert not param[grown].any()  # new weights start at zero


def test_snfs_momentum_is_kept_by_masking_under_plain_sgd(synthetic_corpus):
    config = sparse_config("snfs")
    config.optim.momentum = 0.0
    trainer = Trainer(config, synthetic_corpus)
    assert trainer.sparsifier.uses_momentum and not trainer.optimizer.state
    trainer.train_step(1, 0)
    momenta = trainer.sparsifier.momenta
    assert all(m.abs().sum() > 0 for m in momenta.values())  # dense: also at inactive positions
    name = "decoder.weight"
    inactive = ~trainer.sparsifier.masking.masks[name]
    assert momenta[name][inactive].abs().sum() > 0


@pytest.mark.parametrize("method", ["rigl", "snfs", "selfish"])
def test_checkpoint_round_trip_restores_masks_and_continues_identically(method, synthetic_corpus, tmp_path):
    config = sparse_config(method)
    straight = Trainer(config, synthetic_corpus, tmp_path / "a")
    straight.fit()

    train_until_interrupted(config, synthetic_corpus, tmp_path / "b")
    resumed = Trainer(config, synthetic_corpus, tmp_path / "b")
    fresh_masks = {n: m.clone() for n, m in resumed.sparsifier.masking.masks.items()}
    resumed.load_resume(tmp_path / "b" / LAST)
    assert any(not torch.equal(fresh_masks[n], m) for n, m in resumed.sparsifier.masking.masks.items())
    resumed.fit()
    for (key, a), b in zip(resumed.model.state_dict().items(), straight.model.state_dict().values()):
        assert torch.equal(a, b), key  # weights and mask buffers
    assert resumed.history[-1]["val_loss"] == straight.history[-1]["val_loss"]
    # the best checkpoint loads into a plain model, masks stripped, zeros kept
    model, *_ = load_model(tmp_path / "b" / BEST)
    assert not any(name.endswith("_mask") for name in model.state_dict())
    weights = prunable_parameters(model)
    nonzero = sum(int((w != 0).sum()) for w in weights.values())
    assert nonzero <= round(0.33 * sum(w.numel() for w in weights.values()))


def test_masks_are_bool_buffers_in_the_state_dict(synthetic_corpus):
    trainer = Trainer(sparse_config("set"), synthetic_corpus)
    state = trainer.model.state_dict()
    masks = {k: v for k, v in state.items() if k.endswith("_mask")}
    assert set(masks) == {"embedding.weight_mask", "layers.0.weight_ih_l0_mask", "layers.0.weight_hh_l0_mask",
                          "layers.1.weight_ih_l0_mask", "layers.1.weight_hh_l0_mask", "decoder.weight_mask"}
    assert all(m.dtype == torch.bool for m in masks.values())


def test_tied_weights_are_masked_once():
    from sparsernn.config import ModelConfig
    from sparsernn.models import RNNLanguageModel

    model = RNNLanguageModel(ModelConfig(hidden_sizes=[16, 16], tie_weights=True), vocab_size=40)
    names = prunable_parameters(model)
    assert "embedding.weight" in names and "decoder.weight" not in names


def test_snt_asgd_averages_each_weight_only_over_the_steps_it_was_active():
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = NTASGD([param], lr=1.0, nonmono=1)
    optimizer.averaging = True
    mask_owner = torch.nn.Module()
    mask_owner.w = param
    masking = Masking(mask_owner, ["w"])
    masking.set("w", torch.tensor([True, True, False]))
    grads = [torch.tensor([-1.0, -2.0, -5.0]), torch.tensor([-1.0, -2.0, -5.0])]
    for g in grads:  # two steps with weight 2 masked
        param.grad = g
        optimizer.step()
        masking.apply(optimizer)
    masking.set("w", torch.tensor([True, False, True]))  # weight 1 pruned, weight 2 regrown
    masking.apply(optimizer)
    param.grad = torch.tensor([-1.0, -2.0, -4.0])
    optimizer.step()
    masking.apply(optimizer)
    # weight 0: iterates 1, 2, 3 -> average 2; weight 1 pruned -> 0; weight 2: one active iterate, 4
    with optimizer.averaged():
        assert param.tolist() == pytest.approx([2.0, 0.0, 4.0])
    assert param.tolist() == pytest.approx([3.0, 0.0, 4.0])


def test_nt_asgd_switches_when_validation_stops_improving():
    optimizer = NTASGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, nonmono=2)
    # AWD-LSTM's rule: worse than the best loss from before the last `nonmono` epochs
    switched = [optimizer.observe(v) for v in (5.0, 4.0, 3.0, 2.9, 3.5, 3.2)]
    assert switched == [False, False, False, False, False, True] and optimizer.averaging


def _selfish(synthetic_corpus, death_rate: float):
    return tiny_config(data={"epoch_tokens": 8 * 10 * 12, "dir": str(synthetic_corpus.directory)},
                       sparsity={"method": "selfish", "density": 0.5, "death_rate": death_rate},
                       train={"epochs": 3})


@pytest.mark.parametrize("optimizer", ["sgd", "nt_asgd"])
def test_the_saved_best_model_of_each_epoch_scores_what_was_recorded(optimizer, synthetic_corpus, tmp_path):
    """An epoch-end mask update (Selfish-RNN) comes after the epoch's model is validated and saved:
    evaluating best.safetensors, at any epoch, gives exactly the recorded validation score."""
    from sparsernn.tasks.lm import LanguageModelling

    config = _selfish(synthetic_corpus, 0.5)
    config.optim.name = optimizer
    trainer = Trainer(config, synthetic_corpus, tmp_path)
    task = LanguageModelling(config, synthetic_corpus)
    for epoch in (1, 2, 3):
        trainer.fit(until_epoch=epoch)
        record = trainer.history[-1]
        if record["best"]:
            model, *_ = load_model(tmp_path / BEST)
            assert task.evaluate(model, "valid")["ppl"] == pytest.approx(record["val_ppl"], rel=1e-6)
    assert trainer.sparsifier.updates == 2  # after epochs 1 and 2, none after the last


def test_candidates_with_identical_weights_get_identical_spectra(synthetic_corpus, tmp_path):
    """Two Selfish-RNN candidates differing only in death rate hold the same weights after epoch 1 (the
    rate acts only in the update that follows): their spectra of epoch 1 must be the same."""
    from sparsernn.search.executor import Job, LSOptions, advance

    ls = LSOptions(k=6, samples=2, steps=10)
    progress = [advance(Job(name, _selfish(synthetic_corpus, rate).to_dict(), str(tmp_path / name), 1, ls))
                for name, rate in (("a", 0.3), ("b", 0.8))]
    assert not any(p.failed for p in progress)
    assert progress[0].val_metric[1] == progress[1].val_metric[1]
    assert progress[0].spectra["hc"][1] == progress[1].spectra["hc"][1]
    # and after epoch 2 they differ: the update after epoch 1 removed 30% vs 80% of the weights
    progress = [advance(Job(name, _selfish(synthetic_corpus, rate).to_dict(), str(tmp_path / name), 2, ls))
                for name, rate in (("a", 0.3), ("b", 0.8))]
    assert progress[0].spectra["hc"][2] != progress[1].spectra["hc"][2]
