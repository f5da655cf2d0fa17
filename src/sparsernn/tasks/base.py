"""The Task seam: what is learned and how it is scored. The Trainer runs any Task; it never sees
tokens, windows or tags.

A Task owns its data (on one device), builds its model, gives the loss of each training batch,
evaluates a split into named metrics (one of them primary, with the direction that is better),
supplies the input sequences the Lyapunov engine reads, and states what a checkpoint must carry
to rebuild its model and to check that it is used with the same data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from sparsernn.config import DataConfig, ModelConfig
from sparsernn.errors import CheckpointError, DataError
from sparsernn.registry import Registry
from sparsernn.settings import TASK_SETTINGS

if TYPE_CHECKING:
    from sparsernn.config import RunConfig


def format_metric(name: str, value: float | None) -> str:
    """A metric as tables show it: as the registered task whose primary metric it is formats it (accuracy
    in percent), anything else (perplexity, loss) to 2 places."""
    metric = next((task.primary for task in TASKS if task.primary.name == name), Metric(name, "min"))
    return metric.format(value)


@dataclass(frozen=True)
class Metric:
    """A named evaluation metric, whether lower or higher is better, and whether tables show it in percent."""

    name: str
    goal: Literal["min", "max"]
    percent: bool = False

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.2%}" if self.percent else f"{value:.2f}"

    def better(self, value: float, than: float | None) -> bool:
        if than is None:
            return True
        return value < than if self.goal == "min" else value > than

    def best(self, values) -> float:
        """The best of ``values`` (an iterable of floats; non-empty)."""
        return min(values) if self.goal == "min" else max(values)

    def order(self, value: float) -> float:
        """A sort key: ascending order puts the best value first."""
        return value if self.goal == "min" else -value


class Task(ABC):
    """One learning problem. ``name`` is its one name: ``data.task`` in a config, the registry key, the
    kind its checkpoints record (``kind``, the same); ``settings`` is the model of a run's ``data``
    section for it (``DataConfig``, or a subclass adding the task's own settings); ``corpus`` the type
    of the data it wraps (``build_task``); ``primary`` is the validation metric that picks the best
    epoch; ``unit`` is what training throughput counts (tokens). A subclass registers itself with
    ``TASKS.register`` and is then found by name alone (``sparsernn train --task NAME``)."""

    name: str
    kind: str
    description: str
    primary: Metric
    unit: str = "tok"
    settings: ClassVar[type[DataConfig]] = DataConfig
    corpus: ClassVar[type | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__ and "kind" in cls.__dict__:  # a task written before names were one
            cls.name = cls.kind
        cls.kind = getattr(cls, "name", cls.__name__)  # checkpoints record the task's name

    @classmethod
    def load_data(cls, config: RunConfig) -> tuple[Any, Path, str | None]:
        """The corpus ``config.data`` names: ``(corpus, its directory, a note or None)``."""
        raise DataError(f"task {cls.name} loads no corpus itself: give the Trainer its data")

    @classmethod
    def from_data(cls, config: RunConfig, corpus: Any, device: torch.device | str = "cpu") -> Task:
        """The task over ``corpus`` (what ``load_data`` returned) for ``config``."""
        return cls(config, corpus, device)

    @property
    @abstractmethod
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one training epoch."""

    @abstractmethod
    def build_model(self, config: ModelConfig) -> nn.Module:
        """A freshly initialised model for this task's data."""

    @classmethod
    @abstractmethod
    def model_from_meta(cls, config: ModelConfig, meta: dict[str, Any]) -> nn.Module:
        """The model a checkpoint of this kind describes (its weights are loaded afterwards)."""

    @abstractmethod
    def training_loss(self, model: nn.Module, epoch: int, step: int) -> tuple[torch.Tensor, int]:
        """The mean loss of training batch ``step`` (from 0) of ``epoch`` (from 1), with graph, and how
        many ``unit``s it covers. Batches follow from ``(epoch, step)`` alone, so a resumed run sees
        the same ones."""

    def loss_metrics(self, loss: float) -> dict[str, float]:
        """Metrics derived from a mean loss (perplexity for language models)."""
        return {}

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Named metrics of ``model`` on ``split`` ("valid", "test", or "train": the text it trains on), "loss"
        and the primary among them."""

    @abstractmethod
    def lyapunov_inputs(self, samples: int, steps: int) -> torch.Tensor:
        """``(samples, steps)`` input sequences from validation data for the Lyapunov engine."""

    def meta(self) -> dict[str, Any]:
        """What a checkpoint stores about the data (e.g. the vocabulary)."""
        return {}

    def check_meta(self, meta: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint made on other data (one-line ``CheckpointError`` naming ``path``)."""

    def check_split(self, split: str) -> None:
        """Refuse, before any training, a split that cannot be evaluated (one-line error)."""

    def from_version_0_1(self, resume: dict[str, Any], model: nn.Module) -> tuple[dict[str, Any], float | None]:
        """``(task state, best primary score)`` from a resume checkpoint written by sparsernn 0.1."""
        raise CheckpointError(f"a {self.kind} resume checkpoint from sparsernn 0.1 cannot be continued")

    def describe(self) -> str:
        """One line naming the data, for logs."""
        return self.kind

    def state_dict(self) -> dict[str, Any]:
        """Training state carried between batches (e.g. a language model's hidden state)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


TASKS: Registry[type[Task]] = Registry("task")
TASK_SETTINGS.bind(lambda name: TASKS[name].settings, TASKS.names)  # data.task selects the task's settings
