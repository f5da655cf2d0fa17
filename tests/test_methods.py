"""The registry of sparsity methods: defaults that follow the planned length, the guards each method
keeps, L1, and fine-tuning from a checkpoint (train.init_from)."""

from __future__ import annotations

import pytest
import torch

from sparsernn.errors import CheckpointError, ConfigError
from sparsernn.runs import BEST
from sparsernn.sparsity import METHODS, resolve_method
from sparsernn.sparsity.iss import unit_slices
from sparsernn.sparsity.lasso import GroupLasso
from sparsernn.train import Trainer

from conftest import tiny_config


def test_every_method_is_registered_with_a_description():
    assert set(METHODS.names()) == {"dense", "static", "set", "rigl", "snfs", "dsr", "selfish", "gmp", "iss", "l1"}
    assert all(method.description for method in METHODS)


def test_defaults_follow_the_planned_length_and_explicit_modes_win():
    rigl = resolve_method(tiny_config(sparsity={"method": "rigl", "density": 0.3}, train={"epochs": 20})).sparsity
    assert (rigl.init, rigl.death, rigl.growth, rigl.update_every, rigl.stop_epoch) == ("er", "magnitude", "gradient",
                                                                                         100, 15)
    gmp = resolve_method(tiny_config(sparsity={"method": "gmp", "density": 0.3}, train={"epochs": 20})).sparsity
    assert (gmp.start_epoch, gmp.end_epoch, gmp.update_every) == (1, 15, 100)
    mine = resolve_method(tiny_config(sparsity={"method": "set", "density": 0.3, "growth": "gradient"})).sparsity
    assert mine.growth == "gradient" and mine.death == "set"


def test_selfish_keeps_the_optimizer_the_config_names():
    plain = resolve_method(tiny_config(sparsity={"method": "selfish", "density": 0.3}))
    assert plain.optim.name == "sgd"
    snt = resolve_method(tiny_config(sparsity={"method": "selfish", "density": 0.3}, optim={"name": "nt_asgd"}))
    assert snt.optim.name == "nt_asgd"


@pytest.mark.parametrize("sparsity,extra,message", [
    ({"density": 0.5}, {}, r"sparsity\.density < 1 needs a sparse method"),
    ({"method": "rigl"}, {}, r"sparsity\.method rigl needs sparsity\.density < 1"),
    ({"method": "static", "density": 0.5, "death": "set"}, {}, r"sparsity\.death: not used by sparsity\.method static"),
    ({"method": "rigl", "density": 0.5, "lasso_lambda": 0.1}, {}, r"sparsity\.lasso_lambda: not used by .* rigl"),
    ({"method": "iss"}, {}, r"sparsity\.method iss needs sparsity\.lasso_lambda"),
    ({"method": "iss", "lasso_lambda": 0.1, "density": 0.5}, {}, r"iss learns its sparsity"),
    ({"method": "iss", "target_units": [8, 8, 8]}, {}, r"sparsity\.target_units: 3 values for 2 recurrent layers"),
    ({"method": "iss", "target_units": [40]}, {}, r"sparsity\.target_units: 40 is not in 1\.\.32"),
    ({"method": "iss", "target_units": [8], "target_multiply_adds": 0.5}, {}, r"set one target, not both"),
    ({"method": "iss", "lasso_lambda": 0.1, "target_epoch": 1}, {}, r"sparsity\.target_epoch: only used with"),
    ({"method": "iss", "target_units": [8], "target_epoch": 9}, {"train": {"epochs": 2}}, r"target_epoch 9 is after"),
    ({"method": "iss", "target_units": [8], "lasso_lambda": 0.1}, {}, r"sparsity\.lasso_lambda: a target .* sets lambda"),
    ({"method": "iss", "target_units": [8], "lasso_update": "subgradient"}, {}, r"lasso_update: a target .* proximal"),
    ({"method": "l1", "target_units": [8]}, {}, r"sparsity\.target_units: not used by sparsity\.method l1"),
    ({"method": "gmp", "density": 0.5, "start_epoch": 3, "end_epoch": 2}, {}, r"end_epoch \(2\) is before start_epoch"),
    ({"method": "gmp", "density": 0.5, "update_every": "epoch"}, {}, r"gmp prunes every N steps"),
    ({"method": "magic", "density": 0.5}, {}, r"sparsity\.method: unknown sparsity method 'magic'; expected one of"),
])
def test_method_guards_are_one_line_errors_naming_the_field(sparsity, extra, message):
    with pytest.raises(ConfigError, match=message) as info:
        resolve_method(tiny_config(sparsity=sparsity, **extra))
    assert "\n" not in str(info.value)


def test_l1_adds_lambda_sign_to_the_gradient_and_zeroes_small_weights(synthetic_corpus):
    config = tiny_config(sparsity={"method": "l1", "lasso_lambda": 1e-3, "zero_threshold": 1e-2, "lasso_update": "subgradient"},
                         data={"epoch_tokens": 8 * 10 * 20}, train={"epochs": 1})
    trainer = Trainer(config, synthetic_corpus)
    sparsifier = trainer.sparsifier
    assert isinstance(sparsifier, GroupLasso) and sparsifier.mode == "l1"
    model = trainer.model
    loss, _ = trainer.task.training_loss(model, 1, 0)
    loss.backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    sparsifier.after_backward()
    regularised = {s.param for s in unit_slices(model) if not s.is_bias}  # biases stay out by default
    for name, p in model.named_parameters():
        expected = before[name] + (1e-3 * p.sign() if name in regularised else 0)
        torch.testing.assert_close(p.grad, expected, rtol=0, atol=1e-9)
    trainer.fit()
    for name in regularised:  # after training no regularised weight is below the threshold but zero
        w = model.get_parameter(name).detach().abs()
        assert not ((w > 0) & (w < 1e-2)).any() and (w == 0).float().mean() > 0.1, name


def test_init_from_starts_from_the_checkpoints_weights(synthetic_corpus, tmp_path):
    config = tiny_config(train={"epochs": 1}, data={"epoch_tokens": 8 * 10 * 10})
    Trainer(config, synthetic_corpus, tmp_path / "base").fit()
    tuned = tiny_config(train={"epochs": 1, "init_from": str(tmp_path / "base" / BEST), "seed": 99})
    trainer = Trainer(tuned, synthetic_corpus)
    base = Trainer(config, synthetic_corpus, tmp_path / "base", resume=True).best_model()
    for (key, a), b in zip(trainer.model.state_dict().items(), base.state_dict().values()):
        assert torch.equal(a, b), key

    resized = tiny_config(model={"hidden_sizes": [24, 32]}, train={"init_from": str(tmp_path / "base" / BEST)})
    with pytest.raises(CheckpointError, match=r"best\.safetensors: \S+ has shape \(\d+.*\), the model here \(\d+.*\) \(train\.init_from needs"):
        Trainer(resized, synthetic_corpus)
    (tmp_path / "other").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "other" / f"{split}.txt").write_text("a b c\n" * 50)
    from sparsernn.data import load_corpus

    with pytest.raises(CheckpointError, match=r"vocabulary \(\d+ words\) differs from the corpus"):
        Trainer(tuned, load_corpus(tmp_path / "other"))
