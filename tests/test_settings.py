"""Settings that belong to their plug-in: each sparsity method, cell and task owns a settings model, the
run config nests the one its name selects, and configs written before (flat sections holding every
method's and cell's field) still load, upgraded on read, and compare equal to their new form, so that a
run written by 0.3 resumes; death and growth modes are registries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparsernn import checkpoint
from sparsernn.config import ModelConfig, check_field, resolve_config, upgrade_stored_config, validate
from sparsernn.errors import ConfigError
from sparsernn.runs import flatten_fields, load_model
from sparsernn.settings import CELL_SETTINGS, METHOD_SETTINGS, TASK_SETTINGS
from sparsernn.sparsity import METHODS, modes, resolve_method
from sparsernn.sparsity.dst import DynamicSettings

FIXTURES = Path(__file__).parent / "fixtures"
STORED = json.loads((FIXTURES / "v0.3" / "stored_configs.json").read_text())["configs"]  # flat, as 0.3 wrote them


def test_the_run_config_nests_the_settings_its_names_select():
    config = validate({"data": {"task": "tagging"}, "model": {"cell": "rhn", "depth": 3},
                       "sparsity": {"method": "rigl", "density": 0.3}})
    assert type(config.sparsity) is METHODS["rigl"].settings and config.sparsity.death == "magnitude"
    assert type(config.model) is CELL_SETTINGS.model("rhn") and config.model.depth == 3
    assert type(config.data) is TASK_SETTINGS.model("tagging")
    # what a run records holds the method's settings and no other method's
    assert set(config.to_dict()["sparsity"]) == {"method", "density", "prunable", *METHODS["rigl"].fields}
    assert "lasso_lambda" not in config.to_dict()["sparsity"] and "segments" not in config.to_dict()["model"]
    # a cell's own model is what ModelConfig(cell=...) builds
    assert type(ModelConfig(cell="block_lstm", hidden_sizes=[8], segments=[2])).__name__ == "BlockLSTMSettings"


@pytest.mark.parametrize("name", sorted(STORED))
def test_a_flat_config_stored_by_0_3_loads_and_equals_its_new_form(name):
    stored = STORED[name]
    config = validate(upgrade_stored_config(stored), name)
    assert type(config.sparsity) is METHODS[stored["sparsity"]["method"]].settings
    for section in ("data", "model", "optim", "train", "sparsity"):  # every value set is kept
        for field, value in stored[section].items():
            if hasattr(config.__getattribute__(section), field):
                assert getattr(config.__getattribute__(section), field) == value, f"{section}.{field}"
    # the run's config today, from the same choices, is the same config: resuming compares these
    again = validate(config.to_dict(), "again")
    assert flatten_fields(again.to_dict()) == flatten_fields(config.to_dict())
    assert flatten_fields(resolve_method(again).to_dict()) == flatten_fields(config.to_dict())


def test_the_checkpoint_of_0_1_loads_with_its_old_kind_and_flat_config():
    meta = checkpoint.read_meta(FIXTURES / "v0.1" / "last.safetensors")
    assert meta["kind"] == "language-model" and "lasso_lambda" in meta["config"]["sparsity"]  # the old names
    config = validate(upgrade_stored_config(meta["config"]), "0.1 config")
    assert config.sparsity.method == "rigl" and config.sparsity.update_every == 3 and config.data.task == "lm"
    model, loaded, _, _ = load_model(FIXTURES / "v0.1" / "best.safetensors")
    assert loaded == config and model.hidden_sizes == [6, 5]


def test_old_task_names_are_aliases_of_the_one_name():
    assert validate({"data": {"task": "tagger"}}).data.task == "tagging"
    assert validate({"data": {"task": "language-model"}}).data.task == "lm"
    with pytest.raises(ConfigError, match=r"data\.task: unknown task 'poetry'; expected one of lm, tagging"):
        validate({"data": {"task": "poetry"}})


def test_dotted_overrides_reach_the_method_and_cell_settings():
    config = resolve_config("tiny", None, {"sparsity.method": "rigl", "sparsity.density": 0.5, "sparsity.init": "er",
                                           "model.hidden_sizes": [128, 128], "sparsity.death_rate": 0.4})
    assert (config.sparsity.method, config.sparsity.init, config.sparsity.death_rate) == ("rigl", "er", 0.4)
    assert config.model.hidden_sizes == [128, 128]
    config = resolve_config("tiny", None, {"model.cell": "rhn", "model.depth": 2, "model.hidden_sizes": [32]})
    assert config.model.depth == 2


@pytest.mark.parametrize("data,message", [
    ({"sparsity": {"method": "dense", "death": "set"}}, r"sparsity\.death: not used by sparsity\.method dense"),
    ({"sparsity": {"method": "set", "death": "sideways"}}, r"sparsity\.death: Input should be 'magnitude', 'set'"),
    ({"sparsity": {"method": "set", "nonsense": 1}}, r"sparsity\.nonsense: unknown field"),
    ({"model": {"cell": "gru", "depth": 3}}, r"model\.depth: depth is not used by cell gru"),
    ({"model": {"cell": "rhn", "depth": 0}}, r"model\.depth: Input should be greater than 0"),
    ({"model": {"cell": "lstmx"}}, r"model\.cell: unknown cell 'lstmx'; expected one of lstm"),
    ({"sparsity": {"method": ["rigl"], "death": "set"}}, r"sparsity\.method: Input should be a valid string"),
])
def test_settings_of_the_wrong_plugin_or_bad_values_are_one_line_naming_the_field(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate(data, "cfg")
    assert "\n" not in str(info.value)


def test_a_plugin_setting_is_checked_against_its_own_declaration():
    check_field("sparsity.death", "set", "--death")  # read by the DST methods, whatever the method in place
    check_field("model.depth", 3, "--depth")
    with pytest.raises(ConfigError, match=r"sparsity\.death_rate: Input should be less than or equal to 1"):
        check_field("sparsity.death_rate", 2.0, "--death-rate")
    assert "death" in METHOD_SETTINGS.fields() and "depth" in CELL_SETTINGS.fields()


def test_a_death_and_a_growth_mode_registered_outside_are_accepted_by_name_and_run(monkeypatch, synthetic_corpus):
    from conftest import tiny_config
    from sparsernn.sparsity.report import density_report
    from sparsernn.train import Trainer

    def largest_first(weights, masks, rate, sparsifier):  # prune the largest weights (a test's plug-in)
        return {n: masks[n] & ~modes.select_lowest(weights[n].abs(), masks[n], round(rate * int(masks[n].sum())),
                                                    largest=True) for n in weights}

    def first_free(mask, k, name, sparsifier):  # regrow the first free positions
        return mask | modes.select_lowest(torch.zeros(mask.shape, device=mask.device), ~mask, k)

    monkeypatch.setitem(modes.DEATH_MODES._entries, "largest", modes.DeathMode("largest", "a test's", largest_first))
    monkeypatch.setitem(modes.GROWTH_MODES._entries, "first", modes.GrowthMode("first", "a test's", first_free))
    mask = torch.tensor([[True, True, False, False], [True, True, False, False]])
    weight = torch.arange(1.0, 9.0).view(2, 4)
    pruned = modes.DEATH_MODES["largest"].prune({"w": weight}, {"w": mask}, 0.5, None)
    assert pruned["w"].tolist() == [[True, True, False, False], [False, False, False, False]]  # 5 and 6 went
    assert modes.GROWTH_MODES["first"].grow(pruned["w"], 2, "w", None).tolist() == [[True, True, True, True],
                                                                                    [False, False, False, False]]
    config = tiny_config(sparsity={"method": "set", "density": 0.5, "death": "largest", "growth": "first",
                                   "update_every": 2}, data={"epoch_tokens": 8 * 10 * 6}, train={"epochs": 1})
    assert isinstance(config.sparsity, DynamicSettings) and config.sparsity.death == "largest"
    trainer = Trainer(config, synthetic_corpus)
    before = density_report(trainer.model)["nonzero"]
    for step in range(trainer.steps_per_epoch):
        trainer.train_step(1, step)
    assert trainer.sparsifier.updates == 2 and density_report(trainer.model)["nonzero"] == before
