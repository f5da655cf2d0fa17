"""Ranking rules: from the candidates' evidence at one epoch to the order in which they are kept.

A rule reads what the search knows of each candidate at the ranking's epoch (its LS distance to the
dense reference, when spectra are measured, and its validation loss) and gives each a score, lower
ranking first. Each is registered by name (``sparsernn hyperprune --rank-by NAME``):

- ``ls``: the distance in LS space (the hyperpruning paper's rule);
- ``loss``: the validation loss (the early-stopping signal of Hyperband and of "one epoch" top-K);
- ``pareto``: the candidates that no other beats on both distance and loss come first (non-dominated
  sorting, front by front), each front ordered by the sum of the two ranks;
- ``rank_sum``: the sum of the candidate's rank by distance and its rank by loss;
- ``ls_band``: the paper's distance, among the candidates whose validation loss is within a noise band
  of the best (``LOSS_BAND`` nats: 1% in perplexity); the rest follow, by loss.

Pure functions: numbers in, numbers out. ``decide`` is the elimination step every round takes, shared
by the search and by the studies that replay a search on stored runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sparsernn.registry import Registry

LOSS_BAND = 0.01  # nats of validation loss: 1% in perplexity, about the spread of candidates with one set of weights


@dataclass(frozen=True)
class Evidence:
    """What a ranking reads of the candidates at one epoch (the same names in both maps)."""

    val_loss: Mapping[str, float]
    distance: Mapping[str, float] | None = None  # LS distance to the reference; None without spectra


@dataclass(frozen=True)
class RankingRule:
    name: str
    description: str
    needs_spectra: bool
    score: Callable[[Evidence], dict[str, float]]  # lower ranks first

    def order(self, evidence: Evidence) -> list[str]:
        """The candidates, best first (ties by name)."""
        scores = self.score(evidence)
        return sorted(scores, key=lambda name: (scores[name], name))


RULES: Registry[RankingRule] = Registry("ranking rule")


def ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Average ranks from 1 (lowest value), ties sharing their mean rank."""
    ordered = sorted(values, key=lambda name: values[name])
    result: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and values[ordered[j + 1]] == values[ordered[i]]:
            j += 1
        for name in ordered[i:j + 1]:
            result[name] = (i + j) / 2 + 1
        i = j + 1
    return result


def pareto_fronts(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, int]:
    """Each name's non-dominated front (0: no other is at least as low on both and lower on one)."""
    names, front, level = set(a), {}, 0
    while names:
        current = {n for n in names if not any(a[m] <= a[n] and b[m] <= b[n] and (a[m] < a[n] or b[m] < b[n])
                                                for m in names if m != n)}
        for n in current:
            front[n] = level
        names -= current
        level += 1
    return front


def _distance(evidence: Evidence) -> Mapping[str, float]:
    if evidence.distance is None:
        raise ValueError("this ranking rule reads LS distances, and no spectra were measured")
    return evidence.distance


def _rank_sum(evidence: Evidence) -> dict[str, float]:
    by_distance, by_loss = ranks(_distance(evidence)), ranks(evidence.val_loss)
    return {n: by_distance[n] + by_loss[n] for n in evidence.val_loss}


def _pareto(evidence: Evidence) -> dict[str, float]:
    fronts = pareto_fronts(_distance(evidence), evidence.val_loss)
    total = _rank_sum(evidence)
    span = 2 * len(total) + 1  # a rank sum is below it: the front decides, the rank sum orders within it
    return {n: fronts[n] + total[n] / span for n in total}


def _ls_band(evidence: Evidence) -> dict[str, float]:
    distance, loss = _distance(evidence), evidence.val_loss
    best = min(loss.values())
    inside = {n for n in loss if loss[n] <= best + LOSS_BAND}
    by_distance, by_loss = ranks({n: distance[n] for n in inside}), ranks(loss)
    return {n: by_distance[n] if n in inside else len(inside) + by_loss[n] for n in loss}


RULES.register(RankingRule("ls", "distance to the dense reference in LS space (the hyperpruning paper)", True,
                           lambda evidence: dict(_distance(evidence))))
RULES.register(RankingRule("loss", "validation loss at the ranking's epoch", False,
                           lambda evidence: dict(evidence.val_loss)))
RULES.register(RankingRule("pareto", "non-dominated on (LS distance, validation loss) first, then by rank sum",
                           True, _pareto))
RULES.register(RankingRule("rank_sum", "rank by LS distance plus rank by validation loss", True, _rank_sum))
RULES.register(RankingRule("ls_band", f"LS distance among those within {LOSS_BAND} nats of the best validation "
                           "loss, then the rest by loss", True, _ls_band))


@dataclass(frozen=True)
class Decision:
    kept: list[str]
    eliminated: list[str]
    final: bool  # this ranking decides the survivors: the kept ones train to the end


def decide(order: list[str], survivors: int, insertions: int, last_round: bool, top_k: bool = False,
           protect: str | None = None) -> Decision:
    """One round's elimination from the candidates in ranked order: the better half (ceil) is kept,
    unless this ranking decides the survivors, because halving plus ``insertions`` would leave no more
    than ``survivors``, because it is the ``last_round`` the schedule leaves, or because the strategy
    keeps the ``top_k`` at once; then the best ``survivors`` are kept and train to the end.

    ``protect`` (the holder of the best validation score seen so far) is never eliminated: ranked out,
    it takes the place of the last one kept. Trained to the end, it can only improve on that score,
    so the search's winner is never worse than a model the search saw."""
    half = (len(order) + 1) // 2
    final = top_k or last_round or half + insertions <= survivors
    count = survivors if final else half
    kept = order[:count]
    if protect is not None and protect in order and protect not in kept:
        kept = [*kept[:-1], protect]
    return Decision(kept, [n for n in order if n not in kept], final)
