"""The run directory: its layout, the metrics file, save and load of every checkpoint kind, and the
rules for continuing a run.

Layout::

    config.yaml          the resolved run config (what ran)
    metrics.jsonl        one line per epoch, then a final line (validation, and test when scored)
    best.safetensors     best model by the task's primary validation metric (+ best.json, readable metadata)
    last.safetensors     resume state: model, optimizer, sparsifier, task state, RNG (+ last.json)
    results.json         final numbers, once the run has trained its planned length
    sparsity.json        density report at the start and end of a masked run
    changes.jsonl        settings changed when the run was resumed, and from which epoch
    failed.json          why the run stopped, when its numbers stopped being finite

A model checkpoint holds the model's state dict under ``model.`` and metadata: its ``kind`` (the
task that trained it, which knows how to rebuild the model), the run config and the task's data
description (a language model's vocabulary).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from sparsernn import checkpoint
from sparsernn.config import RunConfig, resolve_config, upgrade_stored_config, validate
from sparsernn.errors import CheckpointError, ConfigError, SparsernnError
from sparsernn.files import atomic_write_text, ensure_directory
from sparsernn.settings import TASK_SETTINGS
from sparsernn.sparsity.masks import strip_masks
from sparsernn.tasks import TASKS

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
BEST = "best.safetensors"
LAST = "last.safetensors"
RESULTS = "results.json"
SPARSITY = "sparsity.json"
CHANGES = "changes.jsonl"
FAILED = "failed.json"

# the preset a run starts from when neither a preset nor a config file is named
DEFAULT_PRESET = "ptb-small"

# Settings a resumed run may change: where it runs and how it reports, never what it computes.
SAFE_ON_RESUME = ("data.dir", "train.device", "train.log_interval", "train.checkpoint_every")


class RunDir:
    """One run's directory and every file in it (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def create(self) -> None:
        ensure_directory(self.path)

    @property
    def has_run(self) -> bool:
        """A run was started here (it has a resume checkpoint)."""
        return (self.path / LAST).is_file()

    def write_config(self, config: RunConfig) -> None:
        atomic_write_text(self.path / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))

    # ---- metrics and results -----------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """The metrics lines; a torn last line (a process killed while appending it) is skipped, any
        other line that is not a JSON object is a one-line error naming the file and line."""
        path = self.path / METRICS
        if not path.is_file():
            return []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: cannot be read as UTF-8 text ({type(exc).__name__})") from None
        records = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                if number == len(lines) and not line.rstrip().endswith("}"):
                    break  # torn by a kill mid-append: the line was never finished
                raise CheckpointError(f"{path} line {number}: not a metrics record (a JSON object)")
            records.append(record)
        return records

    def write_records(self, records: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in records))

    def append_record(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_json(self, name: str) -> Any:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: not readable JSON ({type(exc).__name__})") from None

    def write_json(self, name: str, value: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(value, indent=1) + "\n")

    def results(self) -> dict[str, Any] | None:
        return self.read_json(RESULTS)

    # ---- checkpoints ---------------------------------------------------------------------------

    def stored_config(self) -> dict[str, Any]:
        """The config of the run here, as its resume checkpoint records it."""
        return upgrade_stored_config(checkpoint.read_meta(self.path / LAST)["config"])

    def changes(self, epoch: int, changed: dict[str, tuple[Any, Any]]) -> None:
        with open(self.path / CHANGES, "a", encoding="utf-8") as handle:
            for name, (old, new) in changed.items():
                handle.write(json.dumps({"from_epoch": epoch, "field": name, "old": old, "new": new}) + "\n")


def model_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's best model."""
    path = Path(path)
    return path / BEST if path.is_dir() else path


def save_model(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """A model checkpoint: its state dict under ``model.`` and ``meta`` (kind, config, data description)."""
    checkpoint.save(path, {f"model.{k}": v for k, v in model.state_dict().items()}, meta)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig, Any,
                                                                                dict[str, Any]]:
    """A trained model of any kind: ``(model, config, vocabulary or None, metadata)``; ``path`` may be a run
    directory (its best model). The model is in eval mode; masks are not kept (the weights are zero
    where they were)."""
    from sparsernn.data.lm import Vocabulary

    path = model_path(path)
    tensors, meta = checkpoint.load(path, device)
    kind = TASK_SETTINGS.canonical(meta.get("kind"))  # the names of sparsernn <= 0.3 too ("language-model")
    if not isinstance(kind, str) or kind not in TASKS:
        raise CheckpointError(f"{path}: unknown checkpoint kind {kind!r}; expected one of {', '.join(TASKS.names())}")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: holds no run config (a damaged file?)")
    config = validate(upgrade_stored_config(meta["config"]), f"{path} config")
    try:
        model = TASKS[kind].model_from_meta(config.model, meta).to(device)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: incomplete {kind} metadata ({type(exc).__name__}: {exc})") from None
    try:
        model.load_state_dict(strip_masks(checkpoint.subtree(tensors, "model")))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[1 if "\n" in str(exc).strip() else 0].strip()
        raise CheckpointError(f"{path}: weights do not match the config stored with them ({detail})") from None
    model.eval()
    vocab = Vocabulary(tuple(meta["vocab"])) if "vocab" in meta else None
    return model, config, vocab, meta


# ---- continuing a run --------------------------------------------------------------------------


def flatten_fields(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 20}}`` -> ``{"optim.lr": 20}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_fields(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass
class Resumption:
    """The config a resumed run continues with and the settings it changes (``{field: (old, new)}``)."""

    config: RunConfig
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def resume_config(run: RunDir, overrides: dict[str, Any] | None = None) -> Resumption:
    """The stored config of the run in ``run`` with ``overrides`` applied, where that is safe.

    A resumed run continues exactly: every field that changes what it computes (sizes, optimizer,
    schedule, method, and the planned length ``train.epochs`` that the schedules follow) is
    refused with one line naming it; only the fields in ``SAFE_ON_RESUME`` may change.
    """
    stored = validate(run.stored_config(), f"{run / LAST} config")
    if not overrides:
        return Resumption(stored)
    data = stored.to_dict()
    for dotted, value in overrides.items():
        section, _, leaf = dotted.partition(".")
        data.setdefault(section, {})[leaf] = value
    config = validate(data, f"{run / LAST} config + overrides")
    before, after = flatten_fields(stored.to_dict()), flatten_fields(config.to_dict())
    # a field only one side has is a setting of a method (or cell) the other does not use
    changed = {name: (before.get(name), after.get(name)) for name in {**after, **before}
               if before.get(name) != after.get(name)}
    refused = sorted((name for name in changed if name not in SAFE_ON_RESUME), key=lambda n: n != "train.epochs")
    if refused:  # the horizon first: other fields (a DST stop epoch) may only follow from it
        name = refused[0]
        raise ConfigError(f"{name}: cannot change when resuming {run} (it would no longer continue the same run; "
                          f"was {before.get(name)!r}, asked {after.get(name)!r}); on resume only "
                          f"{', '.join(SAFE_ON_RESUME)} may change")
    return Resumption(config, changed)


def default_run_path(name: str) -> Path:
    """Where a run (or a search) named ``name`` goes when no directory is given: ``runs/NAME-TIME``."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run(preset: str | None, config_file: str | Path | None, overrides: dict[str, Any],
            out_dir: str | Path | None = None) -> tuple[RunDir, RunConfig]:
    """A new run's directory and config: the preset (``DEFAULT_PRESET`` when neither a preset nor a config
    file is named), the config file and the overrides; the directory is ``out_dir`` or one named after
    the preset or config file. A directory that holds a run already is refused: it is continued, not
    started again."""
    config = resolve_config(preset or (None if config_file else DEFAULT_PRESET), config_file, overrides)
    name = preset or (Path(config_file).stem if config_file else DEFAULT_PRESET)
    run = RunDir(out_dir or default_run_path(name))
    if run.has_run:
        raise SparsernnError(f"{run}: holds a run already; continue it with --resume {run} or pick another --out")
    return run, config


def resumed_run(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[RunDir, RunConfig]:
    """The run in ``path`` to continue and its config with ``overrides`` (see ``resume_config``); a
    directory without a resume checkpoint is refused."""
    run = RunDir(path)
    if not run.has_run:
        raise SparsernnError(f"{path}: no run to resume (no last.safetensors)")
    return run, resume_config(run, overrides).config
