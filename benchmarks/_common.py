"""Shared bits of the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


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


def train_run(config, corpus, directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train ``config`` in ``directory`` (resuming an interrupted run) or, when it already finished,
    read its results: ``(final results, per-epoch history)``."""
    from sparsernn.progress import default_reporter
    from sparsernn.train import LAST, METRICS, Trainer

    directory = Path(directory)
    if (directory / "results.json").is_file():
        lines = [json.loads(line) for line in (directory / METRICS).read_text().splitlines()]
        return json.loads((directory / "results.json").read_text()), [l for l in lines if "epoch" in l]
    print(f"== {directory} ==", flush=True)
    trainer = Trainer(config, corpus, directory, reporter=default_reporter())
    if (directory / LAST).is_file():
        trainer.load_resume(directory / LAST)
    return trainer.fit(), trainer.history
