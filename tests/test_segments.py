"""Segmented training: fit(until_epoch) continues exactly, in the same process or a new one; every
schedule follows the planned length; the test split is never read unless asked for."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from sparsernn import checkpoint
from sparsernn.errors import ConfigError
from sparsernn.runs import CHANGES, LAST, RunDir
from sparsernn.sparsity.modes import gmp_density
from sparsernn.train import Trainer

from conftest import tiny_config

HORIZON = 6
METHODS = {
    "dense": {},
    "rigl": {"method": "rigl", "density": 0.4, "update_every": 5},
    "gmp": {"method": "gmp", "density": 0.4, "update_every": 5},
}


def segment_config(method: str):
    # lr halves every epoch from the second: a schedule that shows which horizon a segment follows
    return tiny_config(sparsity=METHODS[method], train={"epochs": HORIZON},
                       optim={"lr_decay": 0.5, "decay_start_epoch": 1, "momentum": 0.9},
                       data={"epoch_tokens": 8 * 10 * 12}, model={"dropout": 0.2})


DRIVER = textwrap.dedent("""
    import dataclasses, json, sys
    import torch
    torch.set_num_threads(1)
    from sparsernn.config import validate
    from sparsernn.data import load_corpus
    from sparsernn.train import Trainer

    class TestSplitRead:
        '''Stands in for the test split: any use of it fails the run.'''
        def __getattr__(self, name):
            raise AssertionError("the test split was read")

    corpus_dir, run_dir, config_json, until = sys.argv[1:5]
    corpus = dataclasses.replace(load_corpus(corpus_dir), test=TestSplitRead())
    trainer = Trainer.open(run_dir, corpus, validate(json.loads(config_json)))
    summary = trainer.fit(until_epoch=int(until))
    print(json.dumps(summary))
""")


def run_segment(tmp_path, corpus_dir, run_dir, config, until: int) -> dict:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    result = subprocess.run([sys.executable, str(script), str(corpus_dir), str(run_dir),
                             json.dumps(config.to_dict()), str(until)], capture_output=True, text=True, timeout=300,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def resume_state(run_dir) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = checkpoint.load(run_dir / LAST)
    return tensors, meta


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_three_epochs_as_one_plus_two_in_two_processes_equal_three_straight(method, synthetic_dir, tmp_path):
    config = segment_config(method)
    straight = run_segment(tmp_path, synthetic_dir, tmp_path / "straight", config, 3)
    first = run_segment(tmp_path, synthetic_dir, tmp_path / "segmented", config, 1)
    assert first["epochs_trained"] == 1 and not first["complete"]
    second = run_segment(tmp_path, synthetic_dir, tmp_path / "segmented", config, 3)
    assert second == straight and second["epochs_trained"] == 3 and second["horizon"] == HORIZON

    ours, our_meta = resume_state(tmp_path / "segmented")
    theirs, their_meta = resume_state(tmp_path / "straight")
    assert ours.keys() == theirs.keys()
    for key in ours:  # weights, masks, optimizer and sparsifier state, carried hidden state, RNG
        assert torch.equal(ours[key], theirs[key]), key
    timing = {"tokens_per_s", "train_seconds"}
    strip = [{k: v for k, v in r.items() if k not in timing} for r in our_meta["history"]]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in their_meta["history"]]
    # the schedules follow the 6-epoch horizon, not the 3 epochs trained
    assert [r["lr"] for r in our_meta["history"]] == [10.0, 5.0, 2.5]
    assert not (tmp_path / "segmented" / "results.json").exists()  # not complete: no final line, no test
    if method == "gmp":  # pruning ends with epoch ceil(0.75 * 6) = 5, step 60; the last update was step 35
        masks = [v for k, v in ours.items() if k.endswith("_mask")]
        density = sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
        assert density == pytest.approx(gmp_density(35, 0, 5 * 12, 0.4), abs=1e-3)
        assert density > 0.44  # a 3-epoch horizon would have reached 0.4 by now


def test_fit_in_segments_in_one_process_equals_one_fit(synthetic_corpus, tmp_path):
    config = segment_config("rigl")
    straight = Trainer(config, synthetic_corpus, tmp_path / "a")
    straight.fit(until_epoch=3)
    calls = []
    segmented = Trainer(config, synthetic_corpus, tmp_path / "b")
    segmented.fit(until_epoch=1, on_epoch=calls.append)
    segmented.fit(until_epoch=3, on_epoch=calls.append)
    assert [c["epoch"] for c in calls] == [1, 2, 3] and calls == segmented.history
    for (key, a), b in zip(segmented.model.state_dict().items(), straight.model.state_dict().values()):
        assert torch.equal(a, b), key
    assert [r["val_loss"] for r in segmented.history] == [r["val_loss"] for r in straight.history]


def test_a_callback_that_raises_loses_no_finished_epoch(synthetic_corpus, tmp_path):
    class Pruned(Exception):
        pass

    def prune(record):
        raise Pruned

    config = segment_config("dense")
    with pytest.raises(Pruned):
        Trainer(config, synthetic_corpus, tmp_path).fit(on_epoch=prune)
    resumed = Trainer.open(tmp_path, synthetic_corpus)
    assert resumed.epoch == 2 and [r["epoch"] for r in RunDir(tmp_path).records()] == [1]


def test_the_test_split_is_scored_only_when_asked(synthetic_corpus, tmp_path):
    config = tiny_config(train={"epochs": 1}, data={"epoch_tokens": 8 * 10 * 5})
    trainer = Trainer(config, synthetic_corpus, tmp_path / "a")
    untested = trainer.fit()
    assert untested["complete"] and "test_loss" not in untested and "val_loss" in untested
    assert "test" not in trainer.task._eval_data  # never batchified, never scored
    tested = Trainer(config, synthetic_corpus, tmp_path / "b").fit(test=True)
    assert tested["val_loss"] == untested["val_loss"] and tested["test_ppl"] > 1
    assert json.loads((tmp_path / "b" / "results.json").read_text())["test_ppl"] == tested["test_ppl"]
    lines = (tmp_path / "b" / "metrics.jsonl").read_text()
    Trainer.open(tmp_path / "b", synthetic_corpus).fit(test=True)  # a finished run: nothing changes
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == lines


def test_resume_refuses_another_horizon_and_records_safe_changes(synthetic_corpus, tmp_path):
    config = segment_config("rigl")
    Trainer(config, synthetic_corpus, tmp_path).fit(until_epoch=1)
    longer = config.model_copy(deep=True)
    longer.train.epochs = HORIZON + 2
    with pytest.raises(ConfigError, match=r"train\.epochs: cannot change when resuming .* was 6, asked 8"):
        Trainer.open(tmp_path, synthetic_corpus, longer)
    with pytest.raises(ConfigError, match=r"optim\.lr: cannot change when resuming"):
        Trainer.open(tmp_path, synthetic_corpus, overrides={"optim.lr": 5.0})
    trainer = Trainer.open(tmp_path, synthetic_corpus, overrides={"train.log_interval": 3})
    assert trainer.config.train.log_interval == 3 and trainer.epoch == 2
    (change,) = [json.loads(line) for line in (tmp_path / CHANGES).read_text().splitlines()]
    assert change == {"from_epoch": 2, "field": "train.log_interval", "old": 100, "new": 3}
    trainer.fit(until_epoch=2)
    assert (tmp_path / "config.yaml").read_text().count("log_interval: 3") == 1
