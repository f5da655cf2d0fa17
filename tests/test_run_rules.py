"""The rules the command line applies, as library functions tested without it: density from sparsity,
new and resumed run directories and their names, a search's base config, and validation problems in one
line."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from conftest import tiny_config
from sparsernn.config import density_override, resolve_config
from sparsernn.errors import ConfigError, SparsernnError
from sparsernn.progress import SilentReporter
from sparsernn.runs import LAST, default_run_path, new_run, resumed_run
from sparsernn.validation import read_yaml_file, validation_line


def test_a_sparsity_becomes_a_density_once():
    assert density_override({"optim.lr": 1}, None) == {"optim.lr": 1}
    assert density_override({}, 0.9) == {"sparsity.density": 0.1}
    with pytest.raises(ConfigError, match="not both"):
        density_override({"sparsity.density": 0.5}, 0.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\), got 1.0"):
        density_override({}, 1.0)


def test_a_new_run_is_named_after_its_preset_or_config_file_and_never_replaces_one(tmp_path):
    assert default_run_path("tiny").parent.name == "runs" and default_run_path("tiny").name.startswith("tiny-")
    run, config = new_run("tiny", None, {"train.epochs": 3}, tmp_path / "a")
    assert run.path == tmp_path / "a" and config.train.epochs == 3
    assert config == resolve_config("tiny", None, {"train.epochs": 3})
    file = tmp_path / "mine.yaml"
    file.write_text("train: {epochs: 2}\n")
    run, config = new_run(None, file, {})
    assert run.path.name.startswith("mine-") and config.train.epochs == 2
    (tmp_path / "a" / LAST).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "a" / LAST).write_bytes(b"")
    with pytest.raises(SparsernnError, match="holds a run already"):
        new_run("tiny", None, {}, tmp_path / "a")
    with pytest.raises(SparsernnError, match="no run to resume"):
        resumed_run(tmp_path / "b")


def test_a_search_base_records_its_corpus_and_checks_the_spectra_inputs(synthetic_dir):
    from sparsernn.launch import search_base

    base, corpus_dir = search_base("tiny", None, {"train.epochs": 1}, str(synthetic_dir), (2, 5), SilentReporter())
    assert base.data.dir == str(synthetic_dir.resolve()) and corpus_dir == synthetic_dir and base.train.epochs == 1
    with pytest.raises(ConfigError, match="--data-dir"):
        search_base("tiny", None, {}, "bad\0dir", None, SilentReporter())


def test_a_new_trainer_is_opened_with_its_corpus_recorded(tmp_path, synthetic_dir):
    from sparsernn.launch import open_trainer
    from sparsernn.runs import RunDir

    config = tiny_config(data={"dir": str(synthetic_dir)})
    trainer, corpus_dir = open_trainer(config, RunDir(tmp_path / "run"), SilentReporter())
    assert (tmp_path / "run").is_dir() and corpus_dir == synthetic_dir
    assert trainer.config.data.dir == str(synthetic_dir.resolve())


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 1
    name: str = "x"

    @field_validator("name")
    @classmethod
    def _short(cls, value: str) -> str:
        if len(value) > 3:
            raise ValueError("at most  three\ncharacters")
        return value


def _problem(**values) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        _Settings(**values)
    return caught.value


def test_a_validation_problem_is_one_line():
    assert validation_line(_problem(size="big")).startswith("size: Input should be a valid integer")
    assert validation_line(_problem(name="long")) == "name: at most three characters (got 'long')"
    assert validation_line(_problem(name="long"), given="never") == "name: at most three characters"
    assert validation_line(_problem(other=1)) == "other: unknown field (got 1)"
    assert validation_line(_problem(other=1), unknown="unknown key", given="never") == "other: unknown key"
    assert validation_line(_problem(name="long"), given="named",
                           name=lambda loc: f"--{loc[0]}") == "--name: at most three characters (got 'long')"


def test_a_yaml_file_that_cannot_be_read_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"missing.yaml: gone$"):
        read_yaml_file(tmp_path / "missing.yaml", not_found=lambda: "gone", unreadable="unreadable")
    (tmp_path / "latin.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"latin.yaml: unreadable \("):
        read_yaml_file(tmp_path / "latin.yaml", not_found="gone", unreadable="unreadable")
    (tmp_path / "ok.yaml").write_text("a: 1\n")
    assert read_yaml_file(tmp_path / "ok.yaml", not_found="gone", unreadable="unreadable") == {"a": 1}
