"""A toolkit that never surprises: each bad input seen by users ends in one line naming what is wrong
(exit 2; 1 for work that failed), and non-finite numbers are caught, never passed on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sparsernn import checkpoint
from sparsernn.config import ModelConfig
from sparsernn.dynamics import lyapunov_spectrum
from sparsernn.errors import CheckpointError, TrainingDiverged
from sparsernn.models import RNNLanguageModel
from sparsernn.runs import BEST, FAILED, LAST, RunDir, load_model, save_model
from sparsernn.sparsity.dense import Dense
from sparsernn.sparsity.iss import component_masks
from sparsernn.train import Trainer

from conftest import CliResult, cli_in_process, tiny_config


@pytest.fixture(scope="module")
def run_dir(synthetic_corpus, tmp_path_factory):
    """A finished tiny LSTM run."""
    path = tmp_path_factory.mktemp("run")
    config = tiny_config(train={"epochs": 1}, data={"epoch_tokens": 8 * 10 * 5, "dir": str(synthetic_corpus.directory)})
    Trainer(config, synthetic_corpus, path).fit()
    return path


@pytest.fixture(scope="module")
def iss_checkpoint(run_dir, tmp_path_factory):
    """The run's model with two ISS components zeroed: something for compact to remove."""
    model, config, _, meta = load_model(run_dir)
    with torch.no_grad():
        for unit in (3, 7):
            for name, mask in component_masks(model, 0, unit).items():
                model.get_parameter(name)[mask] = 0.0
    path = tmp_path_factory.mktemp("iss") / "iss.safetensors"
    save_model(path, model, meta)
    return path


@pytest.fixture()
def a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a directory\n")
    return path


def test_bad_input_to_each_command_is_one_line(run_dir, iss_checkpoint, a_file, synthetic_dir):
    cases = [
        (["train", "--resume", run_dir, "--hidden", "16,16"], "model.hidden_sizes: cannot change when resuming"),
        (["train", "--resume", run_dir, "--method", "rigl", "--density", "0.5"],
         "sparsity.method: cannot change when resuming"),
        (["train", "--resume", run_dir, "--lr", "5", "--epochs", "3"], "train.epochs: cannot change when resuming"),
        (["eval", run_dir, "--split", "foo"], "--split: expected valid, test or train, got 'foo'"),
        (["eval", run_dir, "--batch-size", "0"], "--batch-size: expected a positive number, got 0"),
        (["train", "--data-dir", synthetic_dir, "--preset", "tiny", "--out", a_file / "run"],
         f"{a_file / 'run'}: cannot create the directory ({a_file} is a file)"),
        (["compact", iss_checkpoint, "-o", a_file / "small.safetensors"], f"({a_file} is a file)"),
        (["compact", iss_checkpoint, "-o", a_file.parent / "ok.safetensors", "--plots", a_file / "plots"],
         f"({a_file} is a file)"),
        (["lyapunov", run_dir, "--orthonormalization", "qr"], "--orthonormalization: expected householder or cholesky"),
        (["lyapunov", run_dir, "--basis", "foo"], "--basis: expected layers or stack, got 'foo'"),
        (["lyapunov", run_dir, "--steps", "0"], "--steps: expected a positive number, got 0"),
        (["train", "--sparsity", "1.5", "--print-config"], "--sparsity: expected a fraction in [0, 1), got 1.5"),
        (["train", "--hidden", "64,abc", "--print-config"], "--hidden '64,abc': model.hidden_sizes.1: Input should be"),
        (["train", "--method", "magic", "--print-config"], "--method: sparsity.method: unknown sparsity method 'magic'"),
        (["train", "--bogus"], "No such option: --bogus"),
        (["eval", a_file], f"{a_file}: not a safetensors file"),
    ]
    for args, expected in cases:
        line = cli_in_process(*args).one_line_error()
        assert expected in line, (args, line)
    hidden = cli_in_process("train", "--hidden", "0,64", "--print-config").one_line_error()
    assert hidden.count("[0, 64]") == 1 and "every hidden size must be positive" in hidden


def test_resuming_a_finished_run_says_it_is_complete(run_dir):
    result = cli_in_process("train", "--resume", run_dir)
    assert result.returncode == 0 and "the run is complete (1 of 1 epochs)" in result.stderr


def test_compact_with_nothing_to_remove_says_why_and_writes_nothing(run_dir, tmp_path):
    line = cli_in_process("compact", run_dir, "-o", tmp_path / "small.safetensors").one_line_error(code=1)
    assert "no ISS component is all zero, nothing to remove: the smallest component norm is" in line
    assert "--target-units" in line and not (tmp_path / "small.safetensors").exists()


def test_a_checkpoint_with_nan_weights_is_refused_naming_the_tensor(run_dir, tmp_path):
    tensors, meta = checkpoint.load(run_dir / BEST)
    tensors["model.layers.1.weight_hh_l0"][2, 3] = float("nan")
    checkpoint.save(tmp_path / "nan.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match=r"nan\.safetensors: tensor model\.layers\.1\.weight_hh_l0 holds 1 non-finite"):
        load_model(tmp_path / "nan.safetensors")
    for command in (["eval"], ["lyapunov"], ["compact", "-o", tmp_path / "out.safetensors"]):
        line = cli_in_process(command[0], tmp_path / "nan.safetensors", *command[1:]).one_line_error()
        assert "model.layers.1.weight_hh_l0 holds 1 non-finite value(s)" in line
    assert not (tmp_path / "out.safetensors").exists()


class Poison(Dense):
    """Sets one weight to NaN after step ``at``: training that diverges, at a known moment."""

    def __init__(self, at: int) -> None:
        self.at, self.steps = at, 0

    def attach(self, model, optimizer) -> None:
        self.model = model

    def after_step(self) -> None:
        self.steps += 1
        if self.steps == self.at:
            with torch.no_grad():
                self.model.decoder.weight[0, 0] = float("nan")


def test_diverging_training_stops_keeps_the_last_good_checkpoint_and_says_why(synthetic_corpus, tmp_path):
    config = tiny_config(train={"epochs": 2, "checkpoint_every": 5, "log_interval": 1000},
                         data={"epoch_tokens": 8 * 10 * 30})
    trainer = Trainer(config, synthetic_corpus, tmp_path, sparsifier=Poison(at=12))
    with pytest.raises(TrainingDiverged, match=r"training loss became nan in epoch 1, by step 15: training diverged"):
        trainer.fit()
    failed = json.loads((tmp_path / FAILED).read_text())
    assert failed["epoch"] == 1 and failed["step"] == 15 and "nan" in failed["reason"]
    tensors, meta = checkpoint.load(tmp_path / LAST)  # finite: load checks it
    assert meta["resume"]["step_in_epoch"] == 10 and not (tmp_path / BEST).exists()


def _train_tiny_from_the_command_line(synthetic_dir, run: Path, epochs: int = 1) -> CliResult:
    return cli_in_process("train", "--data-dir", synthetic_dir, "--hidden", "16,16", "--batch-size", "4",
                          "--bptt", "5", "--epochs", epochs, "--epoch-tokens", "400", "--log-interval", "5",
                          "--device", "cpu", "--out", run)


def test_diverging_training_from_the_command_line_exits_1_in_one_line(synthetic_dir, tmp_path, monkeypatch):
    # deterministic on every CPU: a weight is set to NaN after step 7, not left to a float path to overflow
    original = Trainer.train_step

    def poisoned(self, epoch, step):
        result = original(self, epoch, step)
        if step == 7:
            with torch.no_grad():
                self.model.decoder.weight[0, 0] = float("nan")
        return result

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    result = _train_tiny_from_the_command_line(synthetic_dir, tmp_path / "run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]  # progress lines, then the one line that says what happened
    assert line.startswith("error: training loss became nan in epoch 1, by step 10") and "training diverged" in line
    assert "no checkpoint was saved before" in line and (tmp_path / "run" / FAILED).is_file()
    assert "best epoch" not in result.stdout


def test_a_finite_validation_loss_whose_perplexity_overflows_is_divergence(synthetic_dir, tmp_path, monkeypatch):
    """The defect seen on one CPU: validation loss finite (1e4 nats) but perplexity inf; the run must
    stop as diverged (exit 1, failed.json, the last good checkpoint kept), not report `best epoch`."""
    original = Trainer.evaluate_split

    def overflowing(self, split):
        if self.epoch == 2:  # one confident wrong token: every other target costs 1e4 nats, finite
            with torch.no_grad():
                self.model.decoder.weight.zero_()
                self.model.decoder.bias.zero_()
                self.model.decoder.bias[0] = 1e4
        return original(self, split)

    monkeypatch.setattr(Trainer, "evaluate_split", overflowing)
    run = tmp_path / "run"
    result = _train_tiny_from_the_command_line(synthetic_dir, run, epochs=2)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "best epoch" not in result.stdout
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: validation ppl is inf after epoch 2") and "training diverged" in line
    assert f"{run} keeps its last good checkpoint" in line
    failed = json.loads((run / FAILED).read_text())
    assert failed["epoch"] == 2 and "ppl is inf" in failed["reason"]
    _, meta = checkpoint.load(run / LAST)  # epoch 1's checkpoint, finite
    assert meta["epoch"] == 2 and meta["resume"]["step_in_epoch"] == 0
    assert [r["epoch"] for r in RunDir(run).records()] == [1]


def dead_relu_model(dead: int) -> RNNLanguageModel:
    """A ReLU RNN whose first ``dead`` units never fire (large negative bias) and whose others always do."""
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell="rnn_relu", hidden_sizes=[6], embedding_size=4, init_range=0.2), 10)
    with torch.no_grad():
        model.layers[0].bias_ih_l0[:dead] = -100.0
        model.layers[0].bias_ih_l0[dead:] = 5.0
    return model.double()


def test_minus_infinite_exponents_are_null_in_strict_json_and_features_stay_finite():
    spectrum = lyapunov_spectrum(dead_relu_model(2), torch.randint(0, 10, (3, 30)))
    features = spectrum.features
    assert features["num_minus_inf"] == 2 and torch.isneginf(spectrum.exponents[-2:]).all()
    assert all(math.isfinite(features[name]) for name in ("max", "mean", "variance"))
    assert features["mean"] == pytest.approx(float(spectrum.exponents[:4].mean()))
    saved = json.loads(json.dumps(spectrum.to_dict(), allow_nan=False))  # strict JSON
    assert saved["exponents"][-2:] == [None, None] and saved["features"]["num_minus_inf"] == 2
    everything_dead = lyapunov_spectrum(dead_relu_model(6), torch.randint(0, 10, (3, 30))).features
    assert everything_dead["max"] is None and everything_dead["num_minus_inf"] == 6


def test_cholesky_qr_falls_back_to_householder_where_it_breaks_down():
    model, inputs = dead_relu_model(2), torch.randint(0, 10, (3, 30))
    cholesky = lyapunov_spectrum(model, inputs, orthonormalization="cholesky")
    householder = lyapunov_spectrum(model, inputs)
    assert cholesky.fallbacks == 30 and householder.fallbacks == 0
    torch.testing.assert_close(cholesky.exponents, householder.exponents)


def test_errors_from_the_python_api_do_not_speak_of_the_command_line():
    from sparsernn.config import resolve_config
    from sparsernn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^preset tiny \+ overrides: optim\.lr: Input should be greater than 0"):
        resolve_config("tiny", overrides={"optim.lr": -1})


def test_a_ptb_named_file_with_an_unknown_word_names_the_line_and_token(tmp_path):
    from sparsernn.data import load_corpus
    from sparsernn.errors import DataError

    for split, text in (("train", "a b c\n"), ("valid", "a b\nb zebra\n"), ("test", "c\n")):
        (tmp_path / f"ptb.{split}.txt").write_text(text)
    with pytest.raises(DataError, match=r"ptb\.valid\.txt line 2: token 'zebra' is not in the training vocabulary"):
        load_corpus(tmp_path)


def test_help_presets_and_methods_tell_what_there_is():
    from sparsernn.config import list_presets
    from sparsernn.sparsity import METHODS

    help_text = cli_in_process("train", "--help").stdout
    assert "iss" in help_text and "l1" in help_text and "rnn_relu" in help_text
    presets = cli_in_process("presets")
    assert presets.returncode == 0
    for name in list_presets():
        assert name in presets.stdout
    assert "Zaremba et al. (2014)" in presets.stdout
    methods = cli_in_process("methods")
    for method in METHODS:
        assert method.name in methods.stdout
    assert "RigL (Evci et al. 2020)" in methods.stdout


def test_run_files_are_readable_like_any_file_the_user_writes(run_dir):
    import os

    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.yaml", "metrics.jsonl", "best.safetensors", "best.json", "last.safetensors", "results.json"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
