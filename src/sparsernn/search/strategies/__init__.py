"""Search strategies by name (``STRATEGIES``). Each module registers its own; they are imported here in
the order ``--strategy`` lists them."""

from sparsernn.search.strategies import lsh, top_k, full, hyperband  # noqa: F401  (each registers its strategy)
from sparsernn.search.strategies._base import STRATEGIES, Strategy
from sparsernn.search.strategies._steps import final, start, train

__all__ = ["STRATEGIES", "Strategy", "final", "start", "train"]
