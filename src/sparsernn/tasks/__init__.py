"""Tasks: what is learned and how it is scored (``Task``), looked up by checkpoint kind in ``TASKS``."""

from __future__ import annotations

from pathlib import Path

import torch

from sparsernn.config import RunConfig
from sparsernn.data.conll import TaggedCorpus
from sparsernn.data.lm import Corpus
from sparsernn.tasks.base import TASKS, Metric, Task, format_metric
from sparsernn.tasks.lm import LanguageModelling
from sparsernn.tasks.tagging import Tagging


def build_task(config: RunConfig, data: Task | Corpus | TaggedCorpus, device: torch.device | str = "cpu") -> Task:
    """``data`` as a Task: a Task is used as it is, a corpus is wrapped in its task."""
    if isinstance(data, Task):
        return data
    if isinstance(data, Corpus):
        return LanguageModelling(config, data, device)
    if isinstance(data, TaggedCorpus):
        return Tagging(config, data, device)
    raise TypeError(f"expected a Task or a corpus, got {type(data).__name__}")


def primary_metric(config: RunConfig) -> Metric:
    """The validation metric that picks the best epoch (and a search's winner) for ``config``'s task."""
    return (Tagging if config.data.task == "tagging" else LanguageModelling).primary


def load_data(config: RunConfig) -> tuple[Corpus | TaggedCorpus, Path, str | None]:
    """The corpus ``config.data`` names for its task: ``(corpus, its directory, a note or None)``. A
    language model without a directory finds PTB or falls back to a generated corpus; a tagger finds
    ``wsj-pos`` under the data roots."""
    from sparsernn.data import load_corpus, resolve_lm_dir
    from sparsernn.data.conll import load_tagged_corpus
    from sparsernn.data.locate import data_roots
    from sparsernn.errors import DataError

    if config.data.task == "tagging":
        found = (root / "wsj-pos" for root in data_roots() if (root / "wsj-pos" / "wsj_train.conll").is_file())
        directory = Path(config.data.dir).expanduser() if config.data.dir else next(found, None)
        if directory is None:
            raise DataError("no tagging corpus: give --data-dir (a directory with train/valid/test .conll files, "
                            "e.g. ../shared/data/wsj-pos)")
        return load_tagged_corpus(directory), directory, None
    directory, note = resolve_lm_dir(config.data.dir)
    return load_corpus(directory), directory, note


__all__ = ["TASKS", "LanguageModelling", "Metric", "Tagging", "Task", "build_task", "format_metric", "load_data",
           "primary_metric"]
