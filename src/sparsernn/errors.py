"""Errors a user can act on.

Every error raised for bad input is a ``SparsernnError`` whose message is one line naming the
file or field and what was expected; the CLI prints it without a traceback and exits with the
error's ``exit_code``: 2 for bad input, 1 for a run that failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager


class SparsernnError(Exception):
    """Base class of errors caused by user input (files, configs, checkpoints): exit code 2."""

    exit_code = 2


class DataError(SparsernnError):
    """A corpus file is missing, unreadable or malformed."""


class ConfigError(SparsernnError):
    """A config file, preset or override is invalid."""


class CheckpointError(SparsernnError):
    """A checkpoint is missing, incomplete or does not match what it is used with."""


class DiscoveryError(SparsernnError, ValueError):
    """The recurrent stack of a user's module cannot be proven from the module and an example input
    (a cell stepped in Python, a residual mixing units, a receiver that is not a Linear or the next
    layer): the message names the module, and nothing is guessed in its place. Also a ``ValueError``,
    so code that reports a model's bad values (the CLI, naming the checkpoint) reports it too."""


class Failure(SparsernnError):
    """The input was fine but the work could not be done (exit code 1)."""

    exit_code = 1


class TrainingDiverged(Failure):
    """Training produced a non-finite loss."""


class LayerRemoved(Failure):
    """A sparsifier removed every unit of a recurrent layer: the model can no longer carry anything
    through it, so the run stops where it happened rather than finishing as a dead model."""


@contextmanager
def memory_for(what: str) -> Iterator[None]:
    """An allocation that fails inside the block (``MemoryError``, torch's out-of-memory error or its CPU
    allocator's refusal) becomes a one-line ``Failure`` naming ``what`` asked for that much memory."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        text = str(exc)
        if not (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
                or "can't allocate memory" in text or "out of memory" in text.lower()):
            raise
        wanted = re.search(r"allocate (\d+) bytes", text)
        size = f" (one tensor of {int(wanted.group(1)) / 2**30:,.1f} GiB)" if wanted else ""
        raise Failure(f"{what}: needs more memory than there is{size}; ask for less") from None
