"""Sparsity methods, all behind the ``Sparsifier`` protocol, looked up by name in ``METHODS``.

Importing this package registers the built-in methods (each module registers its own).
"""

from sparsernn.sparsity import dense, dst, gmp, lasso_methods  # noqa: F401  (each registers its methods)
from sparsernn.sparsity.base import Sparsifier
from sparsernn.sparsity.dense import Dense
from sparsernn.sparsity.registry import METHODS, Method, build_sparsifier, resolve_method

__all__ = ["METHODS", "Dense", "Method", "Sparsifier", "build_sparsifier", "resolve_method"]
