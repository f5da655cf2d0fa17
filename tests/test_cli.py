"""The command line as a user meets it: subprocesses, exit codes, one-line errors, kill and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import SHARED_PTB, cli_in_process, run_cli
from figures import record_figures

pytestmark = pytest.mark.slow

TINY = ["--hidden", "48,48", "--batch-size", "8", "--eval-batch-size", "4", "--bptt", "10", "--device", "cpu",
        "--lr", "10", "--clip", "0.5", "--log-interval", "1000"]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_missing_data_dir_is_one_line(tmp_path):
    line = one_line_error(run_cli("train", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")))
    assert f"{tmp_path / 'nowhere'}: corpus directory not found" in line


def test_out_of_vocabulary_valid_token_is_one_line(tmp_path):
    (tmp_path / "train.txt").write_text("a b c\n")
    (tmp_path / "valid.txt").write_text("a b\nc d\n")
    (tmp_path / "test.txt").write_text("a\n")
    line = one_line_error(run_cli("train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")))
    assert "valid.txt line 2: token 'd' is not in the training vocabulary" in line


def test_bad_option_value_and_missing_checkpoint_are_one_line(tmp_path):
    assert "optim.lr: Input should be greater than 0" in one_line_error(run_cli("train", "--lr", "-1", "--print-config"))
    assert "checkpoint not found" in one_line_error(run_cli("eval", str(tmp_path / "none.safetensors")))


def test_every_train_option_maps_to_a_config_field():
    from sparsernn.cli import TRAIN_OPTION_FIELDS
    from sparsernn.config import RunConfig, section_fields

    # every field of every section, the registered methods', cells' and tasks' own settings included
    fields = {f"{section}.{name}" for section in RunConfig.model_fields for name in section_fields(section)}
    assert set(TRAIN_OPTION_FIELDS.values()) == fields


def _metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_killed_mid_epoch_resumes_to_the_same_perplexity(synthetic_dir, tmp_path):
    args = ["train", "--data-dir", str(synthetic_dir), *TINY, "--epochs", "2", "--dropout", "0.2",
            "--checkpoint-every", "4", "--seed", "7"]
    straight = run_cli(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sparsernn", *args, "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "last.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (run / "results.json").exists()
    resume_state = json.loads((run / "last.json").read_text())
    assert resume_state["epoch"] == 1 and resume_state["resume"]["step_in_epoch"] > 0  # killed mid-epoch

    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    ours, theirs = _metrics(run), _metrics(tmp_path / "straight")
    assert [m.get("epoch") for m in ours] == [1, 2, None]  # no duplicated epoch lines
    assert ours[-1]["val_ppl"] == theirs[-1]["val_ppl"] and ours[-1]["test_ppl"] == theirs[-1]["test_ppl"]

    # eval of the finished run reproduces its numbers; starting the same --out again is refused
    evaluated = run_cli("eval", str(run))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{ours[-1]['test_ppl']:.2f}" in evaluated.stdout and f"{ours[-1]['val_ppl']:.2f}" in evaluated.stdout
    assert f"{ours[-1]['val_accuracy']:.2%}" in evaluated.stdout  # next-word accuracy beside perplexity
    recited = run_cli("eval", str(run), "--split", "train")  # memorisation: the text it trained on
    assert recited.returncode == 0 and "train" in recited.stdout and "%" in recited.stdout, recited.stderr
    assert "--resume" in one_line_error(run_cli(*args, "--out", str(run)))
    # a finished run says so; a resume may not change what the run computes
    again = run_cli("train", "--resume", str(run))
    assert again.returncode == 0 and "the run is complete (2 of 2 epochs)" in again.stderr
    assert "train.epochs: cannot change when resuming" in one_line_error(run_cli("train", "--resume", str(run),
                                                                                  "--epochs", "3"))


def test_without_any_corpus_the_generated_one_is_used_and_said(tmp_path):
    env = {"HOME": str(tmp_path / "home"), "SPARSERNN_DATA": ""}
    result = subprocess.run(
        [sys.executable, "-m", "sparsernn", "train", "--preset", "tiny", "--epochs", "1", "--epoch-tokens", "2000",
         "--out", "run"], cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env,
                                                                        "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "no PTB corpus found" in result.stderr and "generated corpus" in result.stderr
    assert "test" in result.stdout and (tmp_path / "run" / "best.safetensors").is_file()


@pytest.mark.skipif(not SHARED_PTB.is_dir(), reason="needs ../shared/data/ptb")
def test_data_verify_on_the_real_corpus():
    result = run_cli("data", "verify", "--data-dir", str(SHARED_PTB))
    assert result.returncode == 0, result.stderr
    assert "checksums verified" in result.stdout and "929,589" in result.stdout and "10,000" in result.stdout


def test_data_download_from_a_file_url_reports_checksum_failure(tmp_path):
    (tmp_path / "junk.tgz").write_bytes(b"not an archive")
    line = one_line_error(run_cli("data", "download", "--dest", str(tmp_path / "ptb"), "--url",
                                  (tmp_path / "junk.tgz").as_uri()))
    assert "not a tar archive" in line


def test_sparse_training_iss_compaction_and_lyapunov_from_the_command_line(synthetic_dir, tmp_path, monkeypatch):
    sparse = run_cli("train", "--data-dir", str(synthetic_dir), *TINY, "--epochs", "1", "--epoch-tokens", "3000",
                     "--method", "rigl", "--sparsity", "0.67", "--update-every", "10", "--out", str(tmp_path / "rigl"))
    assert sparse.returncode == 0, sparse.stderr
    assert "sparsity at start" in sparse.stderr and "sparsity at end" in sparse.stderr
    report = json.loads((tmp_path / "rigl" / "sparsity.json").read_text())
    assert report["start"]["nonzero"] == report["end"]["nonzero"] == round(0.33 * report["end"]["total"])

    iss = run_cli("train", "--data-dir", str(synthetic_dir), *TINY, "--epochs", "1", "--epoch-tokens", "4000",
                  "--method", "iss", "--lasso-update", "subgradient", "--lasso-lambda", "0.004", "--zero-threshold", "0.002",
                  "--out", str(tmp_path / "iss"))
    assert iss.returncode == 0, iss.stderr
    drawn = record_figures(monkeypatch)  # the plotting commands run in this process, to read their figures back
    compacted = cli_in_process("compact", str(tmp_path / "iss"), "-o", str(tmp_path / "small.safetensors"),
                               "--plots", str(tmp_path / "plots"))
    assert compacted.returncode == 0, compacted.stderr
    assert "mult-adds" in compacted.stdout and (tmp_path / "plots" / "zero_pattern.png").is_file()
    from sparsernn.data import batchify, load_corpus
    from sparsernn.runs import load_model
    from sparsernn.tasks.lm import evaluate

    iss_model, config, *_ = load_model(tmp_path / "iss")
    small, *_ = load_model(tmp_path / "small.safetensors")
    assert sum(small.hidden_sizes) < sum(iss_model.hidden_sizes)  # ISS removed units
    # the plots show the model before compaction: its non-zero pattern and its component norms
    from sparsernn.sparsity.iss import group_sq_norms

    pattern = drawn["zero_pattern.png"]
    matrices = ["layers.0.weight_ih_l0", "layers.0.weight_hh_l0", "layers.1.weight_ih_l0", "layers.1.weight_hh_l0"]
    assert [p.title.split("\n")[0] for p in pattern.panels] == matrices
    for panel, name in zip(pattern.panels, matrices):
        assert (panel.images[0] == (iss_model.get_parameter(name).detach() != 0).float().numpy()).all(), name
    histograms = drawn["group_norms.png"].panel.bars
    assert [b.label for b in histograms] == ["layer 1", "layer 2"]
    for bars, sq in zip(histograms, group_sq_norms(iss_model)):
        counts, edges = np.histogram(sq.sqrt().numpy(), bins=50)
        assert bars.heights.tolist() == counts.tolist() and bars.x == pytest.approx(edges[:-1])
    valid = batchify(load_corpus(synthetic_dir).valid, config.data.eval_batch_size)
    before, after = evaluate(iss_model, valid, config.data.bptt), evaluate(small, valid, config.data.bptt)
    assert math.exp(after) == pytest.approx(math.exp(before), abs=1e-4)  # compacted computes the same model
    shown = run_cli("eval", str(tmp_path / "small.safetensors"), "--split", "valid")
    assert shown.returncode == 0 and f"{math.exp(after):.2f}" in shown.stdout, shown.stderr

    spectra = cli_in_process("lyapunov", str(tmp_path / "rigl"), str(tmp_path / "small.safetensors"), "--samples",
                             "3", "--steps", "20", "--k", "8", "--out", str(tmp_path / "ls.json"), "--plot",
                             str(tmp_path / "ls.png"))
    assert spectra.returncode == 0, spectra.stderr
    saved = json.loads((tmp_path / "ls.json").read_text())
    assert len(saved) == 2 and all(len(s["exponents"]) == 8 and s["basis"] == "layers" for s in saved.values())
    # the plot draws the spectra the JSON holds: one line per model, its exponents against 1..8
    panel = drawn["ls.png"].panel
    assert panel.title.startswith("Lyapunov spectra: K=3, T=20") and (tmp_path / "ls.png").is_file()
    lines = panel.labelled_lines()
    assert len(lines) == 2
    for label, spectrum in saved.items():
        (line,) = [line for text, line in lines.items() if text.startswith(f"{label} (")]
        assert line.x.tolist() == list(range(1, 9))
        assert line.y.tolist() == [-math.inf if e is None else e for e in spectrum["exponents"]]
    stack = run_cli("lyapunov", str(tmp_path / "rigl"), "--samples", "3", "--steps", "20", "--basis", "stack",
                    "--state", "h", "--out", str(tmp_path / "stack.json"))
    assert stack.returncode == 0, stack.stderr
    (saved,) = json.loads((tmp_path / "stack.json").read_text()).values()
    assert saved["basis"] == "stack" and saved["state"] == "h" and len(saved["exponents"]) == 48 + 48
    bad = run_cli("lyapunov", str(tmp_path / "rigl"), "--basis", "diagonal")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
