"""Shared bits of the benchmark scripts: their command line, machine description and result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def study_parser(doc: str | None, *, data_dir: str | None | bool = None, out: str | None = None,
                 stored: bool = True) -> argparse.ArgumentParser:
    """A study script's command line: its docstring as help; ``--data-dir`` (default ``data_dir``;
    ``False``: a script that reads no corpus), ``--out`` (its run directory, when it trains) and, for a
    script whose result can be printed again (``stored``), ``--report-only``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if data_dir is not False:
        parser.add_argument("--data-dir", default=data_dir, help="the corpus [default: SPARSERNN_DATA or ../shared/data]")
    if out is not None:
        parser.add_argument("--out", default=out, help=f"run directory [default: {out}]")
    if stored:
        parser.add_argument("--report-only", action="store_true", help="print the stored result, no measuring")
    return parser


def parse_study(parser: argparse.ArgumentParser, name: str | Callable[[argparse.Namespace], str],
                report: Callable[[dict[str, Any]], None]) -> argparse.Namespace | None:
    """The parsed options; ``None`` once ``--report-only`` has printed the stored result ``name`` (a
    name or a function of the options, for studies tagged by an option): the script then stops."""
    args = parser.parse_args()
    if args.report_only:
        report(read_result(name(args) if callable(name) else name))
        return None
    return args


def command_line() -> str:
    """How this script was called, as the result JSON records it."""
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d"), "machine": machine(), **payload}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_result(name: str) -> dict[str, Any]:
    """The stored result ``name`` (for a script's ``--report-only``: print it again without measuring)."""
    return json.loads((RESULTS / f"{name}.json").read_text())


def train_run(config, corpus, directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train ``config`` in ``directory`` (resuming an interrupted run) or, when it already finished,
    read its results: ``(final results, per-epoch history)``."""
    from sparsernn.progress import default_reporter
    from sparsernn.runs import RunDir
    from sparsernn.train import Trainer

    run = RunDir(directory)
    if run.results() is not None and "test_loss" in run.results():
        return run.results(), [record for record in run.records() if "epoch" in record]
    print(f"== {directory} ==", flush=True)
    trainer = Trainer.open(directory, corpus, config, reporter=default_reporter())
    return trainer.fit(test=True), trainer.history


def ptb_dir(data_dir: str | None, script: str) -> Path:
    """PTB's directory for a study script; without PTB the script stops saying so."""
    from sparsernn.data import resolve_lm_dir

    corpus_dir, note = resolve_lm_dir(data_dir)
    if note:
        raise SystemExit(f"{script} needs PTB: {note}")
    return corpus_dir


def ptb_corpus(data_dir: str | None, script: str):
    """PTB for a study script, ``(corpus, its directory)``; without PTB the script stops saying so."""
    from sparsernn.data import load_corpus

    corpus_dir = ptb_dir(data_dir, script)
    return load_corpus(corpus_dir), corpus_dir


def stored_or(name: str, fresh: dict[str, Any]) -> dict[str, Any]:
    """A study's stored result (``results/NAME.json``) to continue, or ``fresh`` when there is none."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else fresh


def save_units(name: str, result: dict[str, Any]) -> Path:
    """Write a study's result after a unit finishes (machine and date are stamped anew). Units another
    process of the same study stored meanwhile (seeds run side by side) are kept: the file's units are
    merged under a lock, then ours written over them."""
    import fcntl

    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = RESULTS / f"{name}.json"
        if path.is_file() and "units" in result:
            stored = json.loads(path.read_text()).get("units", {})
            result["units"] = {**stored, **result["units"]}
        return write_result(name, {k: v for k, v in result.items() if k not in ("benchmark", "date", "machine")})


def spearman_with_interval(x: list[float], y: list[float], resamples: int = 2000, seed: int = 0):
    """Spearman's rho of ``x`` and ``y`` and its bootstrap 95% interval (pairs resampled)."""
    import numpy as np
    from scipy.stats import spearmanr

    x, y = np.asarray(x), np.asarray(y)
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(resamples):
        idx = rng.integers(0, len(x), len(x))
        if len(set(idx)) > 2:
            value = spearmanr(x[idx], y[idx]).statistic
            if np.isfinite(value):
                boot.append(value)
    if not boot:  # every resample tied (e.g. candidates that are still one model): no interval
        return rho, float("nan"), float("nan")
    low, high = np.percentile(boot, [2.5, 97.5])
    return rho, float(low), float(high)
