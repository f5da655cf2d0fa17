"""Errors a user can act on.

Every error raised for bad input is a ``SparsernnError`` whose message is one line naming the
file or field and what was expected; the CLI prints it without a traceback and exits with the
error's ``exit_code``: 2 for bad input, 1 for a run that failed.
"""

from __future__ import annotations


class SparsernnError(Exception):
    """Base class of errors caused by user input (files, configs, checkpoints): exit code 2."""

    exit_code = 2


class DataError(SparsernnError):
    """A corpus file is missing, unreadable or malformed."""


class ConfigError(SparsernnError):
    """A config file, preset or override is invalid."""


class CheckpointError(SparsernnError):
    """A checkpoint is missing, incomplete or does not match what it is used with."""


class Failure(SparsernnError):
    """The input was fine but the work could not be done (exit code 1)."""

    exit_code = 1


class TrainingDiverged(Failure):
    """Training produced a non-finite loss."""


class LayerRemoved(Failure):
    """A sparsifier removed every unit of a recurrent layer: the model can no longer carry anything
    through it, so the run stops where it happened rather than finishing as a dead model."""
