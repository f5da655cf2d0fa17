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


# weights, their gradients and up to two optimizer buffers each (momentum, averages): a trained model
# needs about four times its weights, before activations
TRAINING_COPIES = 4


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now (CUDA's free memory; on CPU the kernel's MemAvailable), when known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _weights_bytes(task, config) -> int | None:
    """The bytes of the task's model's weights, from a build on the meta device (nothing allocated)."""
    try:
        with torch.device("meta"):
            model = task.build_model(config)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is simply not pre-checked
        return None
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _too_large(config, device: torch.device, detail: str) -> Failure:
    return Failure(f"model.hidden_sizes {config.hidden_sizes}, embedding_size {config.embedding_size}: the model "
                   f"does not fit in memory on {device}{detail}; choose smaller sizes")


def build_model_within_memory(task, config, device: torch.device) -> nn.Module:
    """The task's model on ``device``; a size that does not fit in memory is one line naming the sizes,
    said before anything is allocated where the weights alone (times the copies training keeps) exceed
    what the device has free, so that a huge model never starts swapping or meets the OOM killer."""
    needed, free = _weights_bytes(task, config), available_memory(device)
    if needed is not None and free is not None and TRAINING_COPIES * needed > free:
        raise _too_large(config, device, f" ({needed / 2**30:,.1f} GiB of weights, about {TRAINING_COPIES}x that "
                                         f"to train; {free / 2**30:,.1f} GiB free)")
    try:
        return task.build_model(config).to(device)
    except (MemoryError, torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, (MemoryError, torch.OutOfMemoryError)) and "allocate" not in str(exc):
            raise
        wanted = re.search(r"allocate (\d+) bytes", str(exc))
        raise _too_large(config, device, f" (one tensor of {int(wanted.group(1)) / 2**30:,.1f} GiB)" if wanted
                         else "") from None
