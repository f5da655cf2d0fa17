"""The registry of sparsity methods: each registered method fills its defaults, reads its settings and
trains a tiny model as its registration says; defaults that follow the planned length, the guards each
method keeps, L1, and fine-tuning from a checkpoint (train.init_from)."""

from __future__ import annotations

import pytest
import torch

from sparsernn.config import section_fields
from sparsernn.errors import CheckpointError, ConfigError
from sparsernn.runs import BEST
from sparsernn.sparsity import METHODS, Dense, build_sparsifier, resolve_method
from sparsernn.sparsity.iss import unit_slices
from sparsernn.sparsity.lasso import GroupLasso
from sparsernn.sparsity.masks import prunable_parameters
from sparsernn.sparsity.report import density_report
from sparsernn.train import Trainer

from conftest import tiny_config


# ---- every registered method does what its registration says ------------------------------------

COMMON = {"method", "density", "prunable"}  # settings any method carries
SPARSITY_FIELDS = set(section_fields("sparsity"))  # every registered method's settings
# values for every other sparsity setting: the first that differs from the one in place is used
VALUES = {"init": ["uniform", "er"], "death": ["magnitude", "set"], "growth": ["random", "gradient"],
          "redistribution": ["none", "nonzeros"], "death_rate": [0.5, 0.4], "death_rate_min": [0.0, 0.1],
          "update_every": [100, 7], "stop_epoch": [1, 2], "start_epoch": [1, 2], "end_epoch": [2, 1],
          "lasso_lambda": [0.01, 0.02], "lasso_update": ["subgradient", "proximal"], "zero_threshold": [0.001, 0.0],
          "group_biases": [True, False], "target_units": [[8], [4]], "target_multiply_adds": [0.5, 0.25],
          "target_epoch": [1, 2]}
# the least a run must say to use a method, the first of these that the method accepts
MINIMAL = [{}, {"density": 0.33}, {"lasso_lambda": 0.005}]


def test_every_sparsity_setting_has_test_values():
    assert set(VALUES) == SPARSITY_FIELDS - COMMON  # a new setting: give it values above


def other_than(field: str, value):
    return next(v for v in VALUES[field] if v != value)


def method_config(name: str, **sparsity):
    return tiny_config(model={"hidden_sizes": [16, 16]}, data={"epoch_tokens": 8 * 10 * 4}, optim={"lr": 1.0},
                       sparsity={"method": name, **sparsity})


def minimal_settings(name: str) -> dict:
    for settings in MINIMAL:
        try:
            resolve_method(method_config(name, **settings))
            return settings
        except ConfigError:
            continue
    raise AssertionError(f"method {name}: none of {MINIMAL} is accepted; add its least settings to MINIMAL")


@pytest.mark.parametrize("name", METHODS.names())
def test_each_method_fills_its_defaults_reads_its_settings_and_refuses_the_rest(name):
    method = METHODS[name]
    assert method.name == name and method.description
    assert set(method.defaults) <= set(method.fields) <= SPARSITY_FIELDS - COMMON
    settings = minimal_settings(name)
    resolved = resolve_method(method_config(name, **settings))
    sparsifier = build_sparsifier(resolved, 4)
    for field, default in method.defaults.items():
        # a setting left unset takes the method's default, and the sparsifier built runs with it ...
        assert getattr(resolved.sparsity, field) == default and getattr(sparsifier, field) == default, field
        # ... while a value given explicitly wins
        explicit = other_than(field, default)
        chosen = resolve_method(method_config(name, **settings, **{field: explicit}))
        assert getattr(chosen.sparsity, field) == explicit
        assert getattr(build_sparsifier(chosen, 4), field) == explicit, field
    for field in sorted(SPARSITY_FIELDS - COMMON - set(method.fields)):
        value = other_than(field, section_fields("sparsity")[field].get_default(call_default_factory=True))
        # refused where the config is read (validated), naming the field
        with pytest.raises(ConfigError, match=rf"(^|: )sparsity\.{field}: not used by sparsity\.method {name} "):
            resolve_method(method_config(name, **settings, **{field: value}))


def train_tiny(trainer: Trainer) -> list[int]:
    """Train the planned run (no validation); returns the masks' non-zero count after every step."""
    counts = []
    step = trainer.sparsifier.after_step

    def counted():
        step()
        counts.append(density_report(trainer.model)["nonzero"])

    trainer.sparsifier.after_step = counted
    for epoch in range(1, trainer.horizon + 1):
        for index in range(trainer.steps_per_epoch):
            trainer.train_step(epoch, index)
        trainer.sparsifier.end_epoch(epoch, {"val_loss": 5.0, "val_ppl": 150.0})
    return counts


def mask_buffers(model) -> dict[str, torch.Tensor]:
    return {name: mask.clone() for name, mask in model.named_buffers() if name.endswith("_mask")}


@pytest.mark.parametrize("name", METHODS.names())
def test_each_method_trains_a_tiny_model_as_it_claims(name, synthetic_corpus):
    """A method with a density target reaches it exactly, with zeros where its masks are off (sparse from
    the start, fixed or pruned and regrown; or dense to sparse); a regulariser shrinks the weights it
    covers; a method with neither trains exactly as plain training does."""
    method = METHODS[name]
    settings = {**minimal_settings(name), **({"update_every": 2} if "update_every" in method.fields else {})}
    trainer = Trainer(method_config(name, **settings), synthetic_corpus)
    model = trainer.model
    start, first_masks = density_report(model), mask_buffers(model)
    counts = train_tiny(trainer)
    assert len(counts) == 2 * trainer.steps_per_epoch == 8
    end = density_report(model)
    density = trainer.config.sparsity.density
    if density < 1:
        target = round(density * end["total"])
        assert end["nonzero"] == target and end["density"] == pytest.approx(density, abs=1 / end["total"])
        assert [m["name"] for m in end["matrices"]] == list(prunable_parameters(model))  # all it prunes is masked
        for buffer, mask in mask_buffers(model).items():
            weight = model.get_parameter(buffer.removesuffix("_mask"))
            assert not weight[~mask].any(), buffer  # zero wherever the mask is off
        if start["density"] == 1.0:  # dense to sparse: masks only shrink, to the target by the end
            steps = [start["nonzero"], *counts]
            assert all(a >= b for a, b in zip(steps, steps[1:])) and len(set(steps)) > 2  # gradually
        else:  # sparse from the first step, at the target after every step
            assert start["nonzero"] == target and set(counts) == {target}
            changed = any(not torch.equal(first_masks[n], m) for n, m in mask_buffers(model).items())
            assert changed == ("death" in method.fields)  # pruned and regrown, or a fixed mask
        return
    assert start["matrices"] == end["matrices"] == [] and set(counts) == {0}  # no masks
    reference = Trainer(method_config(name, **settings), synthetic_corpus, sparsifier=Dense())
    train_tiny(reference)
    plain = dict(reference.model.named_parameters())
    if "lasso_lambda" in method.fields:  # a regulariser: every weight it covers ends smaller than unregularised
        covered = {s.param for s in unit_slices(model) if not s.is_bias}
        assert covered
        for weight in covered:
            assert model.get_parameter(weight).norm() < plain[weight].norm(), weight
    else:
        for key, value in model.named_parameters():
            assert torch.equal(value, plain[key]), key


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
    # 1e-3 would zero every weight of layer 0 within 10 steps: a run that stops (LayerRemoved)
    config = tiny_config(sparsity={"method": "l1", "lasso_lambda": 3e-4, "zero_threshold": 1e-2, "lasso_update": "subgradient"},
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
        expected = before[name] + (3e-4 * p.sign() if name in regularised else 0)
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
