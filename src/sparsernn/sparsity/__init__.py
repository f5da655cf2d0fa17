"""Sparsity methods, all behind the ``Sparsifier`` protocol."""

from sparsernn.sparsity.base import Dense, Sparsifier

__all__ = ["Dense", "Sparsifier"]
