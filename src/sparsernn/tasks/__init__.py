"""Tasks: what is learned and how it is scored (``Task``), looked up by name alone in ``TASKS``.

Importing this package registers the built-in tasks (``lm``, ``tagging``); a task of your own registers
itself (``TASKS.register(MyTask)``) and is then a ``data.task`` value, a ``--task`` choice, a checkpoint
kind and a line of ``sparsernn tasks``, with no edit here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sparsernn.config import RunConfig
from sparsernn.tasks.base import TASKS, Metric, Task, format_metric
from sparsernn.tasks.lm import LanguageModelling
from sparsernn.tasks.tagging import Tagging


def task_of(config: RunConfig) -> type[Task]:
    """The task ``config.data.task`` names."""
    return TASKS[config.data.task]


def build_task(config: RunConfig, data: Any, device: torch.device | str = "cpu") -> Task:
    """``data`` as a Task: a Task is used as it is, a corpus is wrapped in the task that reads its type
    (the one ``config.data.task`` names first)."""
    if isinstance(data, Task):
        return data
    named = task_of(config)
    for task in (named, *TASKS):
        if task.corpus is not None and isinstance(data, task.corpus):
            return task.from_data(config, data, device)
    raise TypeError(f"expected a Task or a corpus, got {type(data).__name__}")


def primary_metric(config: RunConfig) -> Metric:
    """The validation metric that picks the best epoch (and a search's winner) for ``config``'s task."""
    return task_of(config).primary


def load_data(config: RunConfig) -> tuple[Any, Path, str | None]:
    """The corpus ``config.data`` names for its task: ``(corpus, its directory, a note or None)``."""
    return task_of(config).load_data(config)


__all__ = ["TASKS", "LanguageModelling", "Metric", "Tagging", "Task", "build_task", "format_metric", "load_data",
           "primary_metric", "task_of"]
