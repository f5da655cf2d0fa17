"""A run's resume state: what ``last.safetensors`` holds beyond the model, so that a killed run
continues bit for bit (the epoch's position and running loss, the task's data order, the optimizer,
the sparsifier, and every random generator)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sparsernn import checkpoint
from sparsernn.errors import CheckpointError

if TYPE_CHECKING:
    from sparsernn.train import Trainer


def rng_state() -> dict[str, Any]:
    """The state of every generator a run draws from."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    version, _, gauss = random.getstate()
    random.setstate((version, tuple(state["python"]), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_resume(trainer: Trainer, path: Path) -> None:
    """Everything needed to continue exactly where ``trainer`` is now, written to ``path``."""
    tensors = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    resume = {
        "step_in_epoch": trainer.step_in_epoch,
        "epoch_tokens": trainer.epoch_units,
        "epoch_seconds": trainer.epoch_seconds,
        "best_score": trainer.best_score,
        "epoch_loss": trainer.epoch_loss,
        "task": trainer.task.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "sparsifier": trainer.sparsifier.state_dict(),
        "rng": rng_state(),
    }
    meta = trainer.checkpoint_meta()
    meta["resume"] = checkpoint.pack(resume, "resume", tensors)
    checkpoint.save(path, tensors, meta)


def load_resume(trainer: Trainer, path: Path) -> None:
    """Put ``trainer`` where the run saved in ``path`` stood; a file that is not a resume checkpoint of
    this run's model is one line naming it."""
    tensors, meta = checkpoint.load(path, trainer.device)
    if meta.get("resume") is None:
        raise CheckpointError(f"{path}: holds no resume state (is it a best-model checkpoint?)")
    trainer.task.check_meta(meta, path)
    resume = checkpoint.unpack(meta["resume"], tensors)
    if "task" not in resume:  # written by sparsernn 0.1: its task state and best score in the old form
        resume["task"], resume["best_score"] = trainer.task.from_version_0_1(resume, trainer.model)
    try:
        trainer.model.load_state_dict(checkpoint.subtree(tensors, "model"))
        trainer.optimizer.load_state_dict(resume["optimizer"])
        trainer.sparsifier.load_state_dict(resume["sparsifier"])
    except (RuntimeError, KeyError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: does not match the run config ({detail})") from None
    trainer.task.load_state_dict(resume["task"])
    trainer.epoch = meta["epoch"]
    trainer.history = meta["history"]
    trainer.step_in_epoch = resume["step_in_epoch"]
    trainer.epoch_units = resume["epoch_tokens"]
    trainer.epoch_seconds = resume["epoch_seconds"]
    trainer.best_score = resume["best_score"]
    trainer.epoch_loss = resume["epoch_loss"].to(trainer.device)
    set_rng_state(resume["rng"])
