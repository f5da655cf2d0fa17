from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsernn.config import RunConfig, validate
from sparsernn.data import generate_corpus, load_corpus

# Small models run fastest single-threaded (and do not fight a background job for the cores).
torch.set_num_threads(1)

SHARED_PTB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("synthetic"), seed=0, sentences=(3000, 300, 300))


@pytest.fixture(scope="session")
def synthetic_corpus(synthetic_dir):
    return load_corpus(synthetic_dir)


def tiny_config(**sections) -> RunConfig:
    """A small, fast CPU config; keyword arguments override whole sections' fields."""
    data = {
        "data": {"batch_size": 8, "eval_batch_size": 4, "bptt": 10},
        "model": {"hidden_sizes": [32, 32], "init_range": 0.1},
        "optim": {"lr": 10.0, "clip": 0.5},
        "train": {"epochs": 2, "device": "cpu", "seed": 3},
    }
    for section, fields in sections.items():
        data[section] = {**data.get(section, {}), **fields}
    return validate(data, "test config")


class InterruptAt:
    """A progress reporter that raises KeyboardInterrupt at a given step, like a user's Ctrl-C."""

    def __init__(self, step: int) -> None:
        self.step = step

    def start_epoch(self, *args) -> None: ...

    def end_epoch(self) -> None: ...

    def message(self, text) -> None: ...

    def update(self, step: int, stats: dict) -> None:
        if step == self.step:
            raise KeyboardInterrupt


def train_until_interrupted(config: RunConfig, corpus, run_dir: Path, step: int = 7) -> None:
    """Train ``config`` in ``run_dir`` and stop it with a KeyboardInterrupt at ``step`` of epoch 1."""
    from sparsernn.train import Trainer

    interrupted = config.model_copy(deep=True)
    interrupted.train.log_interval = step
    with pytest.raises(KeyboardInterrupt):
        Trainer(interrupted, corpus, run_dir, reporter=InterruptAt(step)).fit()


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sparsernn", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = code, stdout, stderr

    def one_line_error(self, code: int = 2) -> str:
        """The single ``error: ...`` line a failing command must end with (and nothing else on stderr)."""
        assert self.returncode == code, (self.returncode, self.stderr)
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), self.stderr
        return lines[0]


def cli_in_process(*args: str) -> CliResult:
    """The command line run in this process (milliseconds, not the seconds of a new interpreter);
    an exception that escapes it is a bug the test reports with its traceback."""
    import contextlib
    import io

    from sparsernn.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def one_search_worker(monkeypatch):
    """Searches in the tests train their candidates in this process (``--workers auto`` would start one
    process per core): monkeypatched code reaches them, and timings stay the suite's. The tests of
    worker processes ask for them by number."""
    import sparsernn.search.settings

    monkeypatch.setattr(sparsernn.search.settings, "available_cores", lambda: 1)
