"""Top-K: the first ranking (after ``e0`` epochs) keeps the ``survivors`` best; with ``--rank-by loss``,
the "one epoch, then the best K" baseline."""

from __future__ import annotations

from sparsernn.search.strategies._base import STRATEGIES
from sparsernn.search.strategies.lsh import Rounds


@STRATEGIES.register
class TopK(Rounds):
    name = "top_k"
    description = "the first ranking keeps the survivors (one-epoch top-K with --rank-by loss)"
    first_ranking_decides = True
