"""Starting work from a resolved config, as the command line does: a training run's ``Trainer`` (new or
continued) with its corpus, a search's base config with its corpus checked, and a trained model with
the task (the data) it is evaluated on. Every problem is found before any work starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsernn.config import RunConfig, check_field, resolve_config
from sparsernn.errors import SparsernnError, memory_for
from sparsernn.progress import Reporter
from sparsernn.runs import RunDir, load_model, model_path
from sparsernn.tasks import Task, build_task, load_data
from sparsernn.train import Trainer

# the run preset a search starts from when neither a preset nor a config file is named
SEARCH_PRESET = "hyperprune-demo"


def open_trainer(config: RunConfig, run: RunDir, reporter: Reporter, *, resume: bool = False,
                 overrides: dict[str, Any] | None = None) -> tuple[Trainer, Path]:
    """The Trainer of a new run (``config`` in ``run``) or of the run in ``run`` continued with
    ``overrides``, and the corpus directory it reads. The corpus is loaded first and the run directory
    made before any work; a new run records the corpus it uses; a split too small to evaluate is
    refused before anything is trained."""
    corpus, corpus_dir, note = load_data(config)
    if note:
        reporter.message(f"[yellow]note:[/] {note}")
    run.create()  # before any work: a run directory that cannot be made is said before anything else
    if resume:
        trainer = Trainer.open(run.path, corpus, overrides=overrides, reporter=reporter)
    else:
        # the run records exactly which corpus it used (a new value: the config is resolved, immutable)
        config = config.model_copy(update={"data": config.data.model_copy(update={"dir": str(corpus_dir.resolve())})})
        trainer = Trainer(config, corpus, run.path, reporter=reporter)
    for split in ("valid", "test"):  # the splits fit() evaluates
        trainer.task.check_split(split)
    return trainer, corpus_dir


def search_base(preset: str | None, config_file: str | Path | None, overrides: dict[str, Any],
                data_dir: str | None, spectra: tuple[int, int] | None, reporter: Reporter) -> tuple[RunConfig, Path]:
    """A search's base run config (the preset, ``SEARCH_PRESET`` when neither it nor a config file is
    named, the file, the overrides, then ``data_dir``) with its corpus read now, so a corpus that is not
    there is said before any work; so is a task that cannot give the spectra's ``(samples, steps)``
    input sequences. Returns the config, which records the corpus directory, and that directory."""
    base = resolve_config(preset or (SEARCH_PRESET if config_file is None else None), config_file, overrides)
    if data_dir is not None:
        check_field("data.dir", data_dir, "--data-dir")
    base.data.dir = data_dir or base.data.dir
    corpus, corpus_dir, note = load_data(base)
    if spectra is not None:
        samples, steps = spectra
        what = f"--samples {samples}, --steps {steps}"
        try:
            with memory_for(what):
                build_task(base, corpus, "cpu").lyapunov_inputs(samples, steps)
        except ValueError as exc:
            raise SparsernnError(f"{what}: {exc}") from None
    if note:
        reporter.message(f"[yellow]note:[/] {note}")
    base.data.dir = str(corpus_dir.resolve())
    return base, corpus_dir


def model_and_task(ckpt: str | Path, data_dir: str | None, device: torch.device | str,
                   corpora: dict | None = None, eval_batch_size: int | None = None,
                   note: Callable[[str], None] | None = None) -> tuple[Path, nn.Module, RunConfig, Task]:
    """A trained model (a checkpoint, or a run directory's best) and the task it is used with, on the
    corpus it trained on or the one in ``data_dir``; the task checks they belong together. ``corpora``
    keeps the corpora read, for several models; ``note`` hears what is said about a corpus found."""
    if data_dir is not None:
        check_field("data.dir", data_dir, "--data-dir")
    path = model_path(ckpt)
    model, cfg, _, meta = load_model(path, device)
    if data_dir is not None:
        cfg.data.dir = data_dir
    corpora = {} if corpora is None else corpora
    key = (cfg.data.task, cfg.data.dir)
    if key not in corpora:
        corpus, _, said = load_data(cfg)
        if said and note is not None:
            note(said)
        corpora[key] = corpus
    if eval_batch_size is not None:
        cfg.data.eval_batch_size = eval_batch_size
    task = build_task(cfg, corpora[key], device)
    task.check_meta(meta, path)
    return path, model, cfg, task
