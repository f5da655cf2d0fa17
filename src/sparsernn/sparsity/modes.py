"""The pure math of sparse training: initial densities, prune (death), growth and redistribution; and the
registries of death and growth modes (``DEATH_MODES``, ``GROWTH_MODES``) that DST settings name.

Every function takes tensors/numbers and returns tensors/numbers; none touches a model or file.
Masks are bool tensors (True = the weight is kept). Counts are exact: a death of ``k`` removes
exactly ``k`` active weights, a growth of ``k`` activates exactly ``k`` inactive positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sparsernn.registry import Registry

# ---- initial densities ----------------------------------------------------------------------------


def uniform_densities(shapes: Mapping[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """The same density in every matrix."""
    return {name: density for name in shapes}


def erdos_renyi_densities(shapes: Mapping[str, tuple[int, int]], density: float) -> dict[str, float]:
    """Erdős–Rényi densities (Mocanu et al. 2018): ``d_i = eps * (n_in + n_out) / (n_in * n_out)``.

    ``eps`` is chosen so the total non-zero count is ``density * total``; a matrix whose density
    would exceed 1 is made dense and ``eps`` re-solved over the rest, until none exceeds 1.
    """
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (s[0] + s[1]) / (s[0] * s[1]) for n, s in shapes.items()}
    target = density * sum(numel.values())
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in dense]
        budget = target - sum(numel[n] for n in dense)
        eps = budget / sum(raw[n] * numel[n] for n in free) if free else 0.0
        overflowing = {n for n in free if eps * raw[n] > 1.0}
        if not overflowing:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense |= overflowing


def nonzero_counts(numel: Mapping[str, int], densities: Mapping[str, float]) -> dict[str, int]:
    """Integer non-zero counts per matrix, each within one weight of ``density_i * numel_i`` and summing
    to the rounded global target (largest-remainder rounding)."""
    exact = {n: densities[n] * numel[n] for n in numel}
    counts = {n: math.floor(v) for n, v in exact.items()}
    missing = round(sum(exact.values())) - sum(counts.values())
    for name in sorted(exact, key=lambda n: counts[n] - exact[n])[:max(missing, 0)]:
        counts[name] += 1
    return {n: min(c, numel[n]) for n, c in counts.items()}


def select_lowest(score: torch.Tensor, candidates: torch.Tensor, k: int, largest: bool = False) -> torch.Tensor:
    """Exactly ``k`` candidate positions with the lowest (``largest``: highest) non-negative ``score``,
    ties broken by position.

    Memory-light by design: instead of ``topk`` (whose value and index buffers cost several times the
    input) the k-th score is found by bisection on the scores' bit patterns, which order non-negative
    floats exactly like their values; an update then costs one integer copy and bool temporaries.
    """
    count = int(candidates.sum())
    if k >= count:
        return candidates.clone()
    out = torch.zeros_like(candidates)
    if k <= 0:
        return out
    values = score.float() if score.dtype not in (torch.float32, torch.float64) else score
    int_type, infinity = (torch.int32, 0x7F800000) if values.dtype == torch.float32 else (torch.int64, 0x7FF0 << 48)
    keys = values.view(int_type)
    keys = (infinity - keys) if largest else keys.clone()
    keys.masked_fill_(~candidates, infinity + 1)
    low, high = 0, infinity + 1  # invariant: count(keys <= high) >= k
    while low < high:
        middle = (low + high) // 2
        if int((keys <= middle).sum()) >= k:
            high = middle
        else:
            low = middle + 1
    torch.lt(keys, high, out=out)
    missing = k - int(out.sum())
    if missing > 0:  # ties at the threshold: the first ones by position
        ties = (keys == high).view(-1).nonzero().squeeze(1)[:missing]
        out.view(-1)[ties] = True
    return out


def random_mask(shape: tuple[int, ...], count: int, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool mask with exactly ``count`` True entries at uniformly random positions."""
    scores = torch.rand(shape, generator=generator).to(device)
    return select_lowest(scores, torch.ones(shape, dtype=torch.bool, device=device), count)


# ---- death (pruning) ---------------------------------------------------------------------------------


def _remove_lowest(score: torch.Tensor, mask: torch.Tensor, k: int, owned: bool = False) -> torch.Tensor:
    """Deactivate the ``k`` active entries with the lowest non-negative ``score``."""
    return mask & ~select_lowest(score, mask, k)


def magnitude_death(weight: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Remove the ``k`` active weights of smallest magnitude."""
    return _remove_lowest(weight.abs(), mask, k, owned=True)


def set_death(weight: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """SET (Mocanu et al. 2018): remove the positive weights closest to zero and the negative weights
    closest to zero, half of ``k`` each (a side with too few gives the rest to the other).

    Active weights equal to zero (just regrown) count with the positive side: they are the closest."""
    positive = mask & (weight >= 0)
    negative = mask & (weight < 0)
    n_pos, n_neg = int(positive.sum()), int(negative.sum())
    k = min(k, n_pos + n_neg)
    k_pos = min(n_pos, k - min(n_neg, k // 2))
    k_neg = k - k_pos
    out = _remove_lowest(weight, positive, k_pos) | negative  # smallest positives
    out = _remove_lowest(-weight, negative, k_neg, owned=True) | (out & ~negative)  # negatives nearest zero
    return out


def threshold_death(weight: torch.Tensor, mask: torch.Tensor, k: int, threshold: float,
                    tolerance: float = 0.05, max_iterations: int = 40) -> tuple[torch.Tensor, float]:
    """Remove active weights with ``|w| < t``, adapting ``t`` from its previous value until the count
    removed is within ``tolerance * k`` of ``k``. Returns the new mask and the threshold reached.

    The threshold is bracketed by doubling/halving from its last value (as in DSR's adaptive
    threshold) and refined by bisection; the count removed may differ from ``k`` within tolerance.
    """
    magnitude = torch.where(mask, weight.abs(), torch.full_like(weight, math.inf))
    active = int(mask.sum())
    k = min(k, active)
    if k <= 0:
        return mask.clone(), threshold

    def removed(t: float) -> int:
        return int((magnitude < t).sum())

    allowed = max(1, int(tolerance * k))
    t = threshold if threshold > 0 else float(magnitude[mask].abs().mean())
    low, high = 0.0, math.inf
    for _ in range(max_iterations):
        count = removed(t)
        if abs(count - k) <= allowed:
            break
        if count < k:
            low = t
            t = t * 2.0 if math.isinf(high) else (t + high) / 2.0
        else:
            high = t
            t = (low + t) / 2.0
    return mask & ~(magnitude < t), t


def global_magnitude_death(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                           k: int) -> dict[str, torch.Tensor]:
    """Remove the ``k`` smallest-magnitude active weights across all matrices (one threshold)."""
    names = list(weights)
    flat = torch.cat([weights[n].abs().view(-1) for n in names])
    active = torch.cat([masks[n].view(-1) for n in names])
    removed = select_lowest(flat, active, k)
    out, start = {}, 0
    for n in names:
        size = masks[n].numel()
        out[n] = masks[n] & ~removed[start:start + size].view_as(masks[n])
        start += size
    return out


# ---- growth -------------------------------------------------------------------------------------------


def random_growth(mask: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Activate ``k`` inactive positions chosen uniformly at random."""
    scores = torch.rand(mask.shape, generator=generator).to(mask.device)
    return mask | select_lowest(scores, ~mask, k)


def score_growth(mask: torch.Tensor, k: int, score: torch.Tensor) -> torch.Tensor:
    """Activate the ``k`` inactive positions of largest ``|score|`` (RigL: the dense gradient;
    SNFS: the momentum)."""
    return mask | select_lowest(score.abs(), ~mask, k, largest=True)


# ---- the modes by name: what a DST method's death and growth settings select -------------------------


@dataclass(frozen=True)
class DeathMode:
    """A way to prune: ``prune(weights, masks, rate, sparsifier)`` removes ``rate`` of the active weights
    (per matrix, or across them) and returns the new masks; ``sparsifier`` carries what a mode keeps
    between updates (``thresholds``, ``threshold_tolerance``)."""

    name: str
    description: str
    prune: Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], float, Any], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class GrowthMode:
    """A way to regrow: ``grow(mask, k, name, sparsifier)`` activates ``k`` inactive positions of matrix
    ``name``; ``uses_momentum`` asks the sparsifier to keep the dense gradient's momentum."""

    name: str
    description: str
    grow: Callable[[torch.Tensor, int, str, Any], torch.Tensor]
    uses_momentum: bool = False


DEATH_MODES: Registry[DeathMode] = Registry("death mode")
GROWTH_MODES: Registry[GrowthMode] = Registry("growth mode")


def per_matrix(death: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> Callable:
    """A death of ``k`` weights in one matrix as a ``DeathMode.prune``: ``rate`` of each matrix's active weights."""
    def prune(weights, masks, rate, sparsifier):
        return {n: death(weights[n], masks[n], round(rate * int(masks[n].sum()))) for n in weights}

    return prune


def _threshold(weights, masks, rate, sparsifier):
    out = {}
    for n in weights:
        out[n], sparsifier.thresholds[n] = threshold_death(weights[n], masks[n], round(rate * int(masks[n].sum())),
                                                           sparsifier.thresholds.get(n, 0.0),
                                                           sparsifier.threshold_tolerance)
    return out


def _global(weights, masks, rate, sparsifier):
    return global_magnitude_death(weights, masks, round(rate * sum(int(m.sum()) for m in masks.values())))


def _gradient(mask, k, name, sparsifier):
    grad = sparsifier.masking.params[name].grad
    if grad is None:
        raise RuntimeError(f"gradient growth needs the gradient of {name}; none was computed")
    return score_growth(mask, k, grad)


DEATH_MODES.register(DeathMode("magnitude", "the smallest |w| of each matrix", per_matrix(magnitude_death)))
DEATH_MODES.register(DeathMode("set", "SET: the positive and the negative weights nearest zero, half each",
                               per_matrix(set_death)))
DEATH_MODES.register(DeathMode("threshold", "DSR's adaptive threshold per matrix (count within 5%)", _threshold))
DEATH_MODES.register(DeathMode("global_magnitude", "the smallest |w| across all matrices (one threshold)", _global))
GROWTH_MODES.register(GrowthMode("random", "uniformly random inactive positions",
                                 lambda mask, k, name, s: random_growth(mask, k, s.generator)))
GROWTH_MODES.register(GrowthMode("gradient", "RigL: the largest |dense gradient|", _gradient))
GROWTH_MODES.register(GrowthMode("momentum", "SNFS: the largest |momentum of the dense gradient|",
                                 lambda mask, k, name, s: score_growth(mask, k, s.momenta[name]), uses_momentum=True))


# ---- redistribution -------------------------------------------------------------------------------------


def redistribution_scores(mode: str, weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                          momenta: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
    """How much each matrix deserves of the regrowth budget (after pruning):
    ``magnitude`` mean |w| over its active weights, ``nonzeros`` its active count, ``momentum``
    mean |momentum| over its active weights (Dettmers & Zettlemoyer 2019)."""
    scores = {}
    for name, mask in masks.items():
        active = int(mask.sum())
        if mode == "nonzeros":
            scores[name] = float(active)
        elif mode == "magnitude":
            scores[name] = float(weights[name].abs()[mask].mean()) if active else 0.0
        elif mode == "momentum":
            if momenta is None:
                raise ValueError("momentum redistribution needs momenta")
            scores[name] = float(momenta[name].abs()[mask].mean()) if active else 0.0
        else:
            raise ValueError(f"unknown redistribution mode {mode!r}")
    return scores


def allocate(total: int, scores: Mapping[str, float], capacity: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` regrowth slots in proportion to ``scores``, never giving a matrix more than its
    ``capacity`` (free positions); what a full matrix cannot take goes to the others. Exact sum."""
    total = min(total, sum(capacity.values()))
    share = {n: 0 for n in scores}
    open_ = {n for n in scores if capacity[n] > 0}
    remaining = total
    while remaining > 0 and open_:
        weight = sum(max(scores[n], 0.0) for n in open_)
        exact = {n: remaining * (max(scores[n], 0.0) / weight if weight > 0 else 1 / len(open_)) for n in open_}
        give = {n: min(math.floor(v), capacity[n] - share[n]) for n, v in exact.items()}
        leftover = remaining - sum(give.values())
        # largest remainders get the rounding slack, capacity permitting
        for n in sorted(open_, key=lambda n: give[n] - exact[n]):
            if leftover <= 0:
                break
            if give[n] < capacity[n] - share[n]:
                give[n] += 1
                leftover -= 1
        for n, g in give.items():
            share[n] += g
        remaining = total - sum(share.values())
        open_ = {n for n in open_ if share[n] < capacity[n]}
    return share


# ---- schedules --------------------------------------------------------------------------------------------


def cosine_death_rate(step: int, total_steps: int, initial: float, minimum: float = 0.0) -> float:
    """Cosine annealing of the death rate from ``initial`` at step 0 to ``minimum`` at ``total_steps``."""
    if total_steps <= 0 or step >= total_steps:
        return minimum
    return minimum + 0.5 * (initial - minimum) * (1.0 + math.cos(math.pi * step / total_steps))


def gmp_density(step: int, start: int, end: int, final_density: float, initial_density: float = 1.0) -> float:
    """Zhu & Gupta (2017): sparsity ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t_end - t0))^3``, as density."""
    if step <= start:
        return initial_density
    if step >= end:
        return final_density
    progress = (step - start) / (end - start)
    initial_sparsity, final_sparsity = 1.0 - initial_density, 1.0 - final_density
    return 1.0 - (final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3)
