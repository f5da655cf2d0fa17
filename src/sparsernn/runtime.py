"""Where and how a run executes: the device it names, seeding, and a model built within memory."""

from __future__ import annotations

import random
import re

import torch
from torch import nn

from sparsernn.errors import ConfigError, Failure


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; anything else is refused naming ``option``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and not (kind == "cuda" and index.isdigit())):
        raise ConfigError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option}: cuda requested but no CUDA device is available")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"{option}: {name} requested but there are {torch.cuda.device_count()} CUDA devices")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed every generator a run draws from (Python's for data order, torch's for weights and masks)."""
    random.seed(seed)
    torch.manual_seed(seed)


def build_model_within_memory(task, config, device: torch.device) -> nn.Module:
    """The task's model on ``device``; a size that does not fit in memory is one line naming the sizes."""
    try:
        return task.build_model(config).to(device)
    except (MemoryError, torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, (MemoryError, torch.OutOfMemoryError)) and "allocate" not in str(exc):
            raise
        wanted = re.search(r"allocate (\d+) bytes", str(exc))
        size = f" (one tensor of {int(wanted.group(1)) / 2**30:,.1f} GiB)" if wanted else ""
        raise Failure(f"model.hidden_sizes {config.hidden_sizes}, embedding_size {config.embedding_size}: the model "
                      f"does not fit in memory on {device}{size}; choose smaller sizes") from None
