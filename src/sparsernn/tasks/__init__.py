"""Tasks: what is learned and how it is scored (``Task``), looked up by checkpoint kind in ``TASKS``."""

from __future__ import annotations

import torch

from sparsernn.config import RunConfig
from sparsernn.data.lm import Corpus
from sparsernn.tasks.base import TASKS, Metric, Task
from sparsernn.tasks.lm import LanguageModelling


def build_task(config: RunConfig, data: Task | Corpus, device: torch.device | str = "cpu") -> Task:
    """``data`` as a Task: a Task is used as it is, a language-modelling corpus is wrapped."""
    if isinstance(data, Task):
        return data
    if isinstance(data, Corpus):
        return LanguageModelling(config, data, device)
    raise TypeError(f"expected a Task or a Corpus, got {type(data).__name__}")


__all__ = ["TASKS", "LanguageModelling", "Metric", "Task", "build_task"]
