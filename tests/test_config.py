from __future__ import annotations

import pytest

from sparsernn.config import list_presets, parse_override, resolve_config
from sparsernn.errors import ConfigError
from sparsernn.optim import learning_rate


def test_presets_ship_and_follow_zaremba():
    assert {"tiny", "ptb-small", "ptb-medium", "ptb-large"} <= set(list_presets())
    small = resolve_config("ptb-small")
    assert small.model.hidden_sizes == [200, 200] and small.model.dropout == 0.0 and small.model.init_range == 0.1
    assert (small.data.batch_size, small.data.bptt, small.train.epochs) == (20, 20, 13)
    # paper lr 1 / clip 5 on the loss summed over bptt steps == lr*bptt / clip/bptt on the mean loss
    assert small.optim.lr == 1.0 * small.data.bptt and small.optim.clip == pytest.approx(5.0 / small.data.bptt)
    medium, large = resolve_config("ptb-medium"), resolve_config("ptb-large")
    assert medium.model.hidden_sizes == [650, 650] and medium.model.dropout == 0.5 and medium.train.epochs == 39
    assert medium.optim.lr == 35 and medium.optim.clip == pytest.approx(5 / 35)
    assert large.model.hidden_sizes == [1500, 1500] and large.model.dropout == 0.65 and large.train.epochs == 55
    assert large.optim.clip == pytest.approx(10 / 35) and large.optim.lr_decay == pytest.approx(1 / 1.15)


def test_zaremba_schedule():
    optim = resolve_config("ptb-small").optim
    assert [learning_rate(optim, e) for e in (1, 4, 5, 6, 13)] == [20, 20, 10, 5, 20 / 2**9]
    medium = resolve_config("ptb-medium").optim
    assert learning_rate(medium, 6) == 35 and learning_rate(medium, 8) == pytest.approx(35 * 0.8**2)


def test_layers_resolve_in_order_preset_file_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  hidden_sizes: [373, 315]\noptim:\n  lr: 5\n")
    config = resolve_config("ptb-small", path, {"optim.lr": 7, "train.epochs": 2})
    assert config.model.hidden_sizes == [373, 315]  # file over preset
    assert config.optim.lr == 7 and config.train.epochs == 2  # overrides over file
    assert config.optim.lr_decay == 0.5  # preset kept where not overridden


@pytest.mark.parametrize(
    "text,expected",
    [
        ("model:\n  hiden_sizes: [3]\n", r"run\.yaml: model\.hiden_sizes: unknown field"),
        ("model:\n  hidden_sizes: [0, 3]\n", r"model\.hidden_sizes: .*positive"),
        ("optim:\n  lr: fast\n", r"optim\.lr: .*number.*'fast'"),
        ("model: [1, 2\n", r"run\.yaml: line \d+ is not valid YAML"),
        ("- 1\n- 2\n", r"run\.yaml: expected a mapping"),
        ("model:\n  tie_weights: true\n  hidden_sizes: [200, 100]\n", r"tie_weights needs the last hidden size"),
    ],
)
def test_bad_config_file_is_one_line_naming_file_and_field(tmp_path, text, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as info:
        resolve_config(None, path)
    assert "\n" not in str(info.value)


def test_missing_config_and_unknown_preset():
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        resolve_config(None, "nope.yaml")
    with pytest.raises(ConfigError, match=r"ptb-small: config file not found \(a preset of that name exists: "
                                          r"--preset ptb-small\)"):
        resolve_config(None, "ptb-small")
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; available: .*ptb-small"):
        resolve_config("nope")


def test_override_values_parse_as_yaml():
    assert parse_override("optim.lr=20") == ("optim.lr", 20)
    assert parse_override("model.hidden_sizes=[3, 4]") == ("model.hidden_sizes", [3, 4])
    assert parse_override("optim.clip=null") == ("optim.clip", None)
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        parse_override("optim.lr")


def test_a_config_is_resolved_once_and_immutable_after():
    import copy

    from sparsernn.config import resolve_config
    from sparsernn.sparsity import resolve_method

    config = resolve_config("hyperprune-demo", None, {"sparsity.method": "rigl", "sparsity.density": 0.5})
    resolved = resolve_method(config)
    assert resolved is not config and not config.frozen  # the value given is left as it was
    assert resolved.sparsity.death_rate is not None  # the method's defaults filled in
    assert resolve_method(resolved) is resolved  # not copied and resolved again downstream
    with pytest.raises(TypeError, match="RiglSettings.density: this config is resolved and immutable"):
        resolved.sparsity.density = 0.3
    with pytest.raises(TypeError, match="immutable"):
        resolved.train = resolved.train
    changed = copy.deepcopy(resolved)  # a copy is a new value to change and resolve
    changed.sparsity.density = 0.3
    assert resolve_method(changed).sparsity.density == 0.3 and resolved.sparsity.density == 0.5
