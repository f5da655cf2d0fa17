"""Errors a user can act on.

Every error raised for bad input is a ``SparsernnError`` whose message is one line naming the
file or field and what was expected; the CLI prints it without a traceback and exits with 2.
"""

from __future__ import annotations


class SparsernnError(Exception):
    """Base class of errors caused by user input (files, configs, checkpoints)."""


class DataError(SparsernnError):
    """A corpus file is missing, unreadable or malformed."""


class ConfigError(SparsernnError):
    """A config file, preset or override is invalid."""


class CheckpointError(SparsernnError):
    """A checkpoint is missing, incomplete or does not match what it is used with."""
