"""Each mode does what its name says, on constructed tensors."""

from __future__ import annotations

import math

import pytest
import torch

from sparsernn.sparsity import modes


def test_magnitude_death_removes_exactly_the_k_smallest_active():
    w = torch.tensor([[0.5, -0.01, 3.0], [-0.2, 0.02, -4.0]])
    mask = torch.tensor([[True, False, True], [True, True, True]])  # -0.01 already inactive
    out = modes.magnitude_death(w, mask, 2)
    assert out.tolist() == [[True, False, True], [False, False, True]]  # 0.02 and -0.2 go


def test_set_death_removes_positives_and_negatives_closest_to_zero_half_each():
    w = torch.tensor([-5.0, -0.1, -0.2, -3.0, 0.3, 0.05, 4.0, 0.2])
    out = modes.set_death(w, torch.ones(8, dtype=torch.bool), 4)
    assert (~out).nonzero().flatten().tolist() == [1, 2, 5, 7]  # -0.1, -0.2, 0.05, 0.2
    # the public Selfish-RNN code removes the most negative weights instead; we keep them
    assert out[0] and out[3]


def test_set_death_takes_the_rest_from_the_other_side_when_one_runs_short():
    w = torch.tensor([-0.5, 0.1, 0.2, 0.3, 0.4])
    out = modes.set_death(w, torch.ones(5, dtype=torch.bool), 4)
    assert int((~out).sum()) == 4 and out.tolist() == [False, False, False, False, True]


def test_threshold_death_meets_the_count_within_tolerance():
    torch.manual_seed(0)
    w = torch.randn(200, 100)
    mask = torch.rand(200, 100) < 0.5
    out, threshold = modes.threshold_death(w, mask, 1000, threshold=0.0, tolerance=0.05)
    removed = int(mask.sum() - out.sum())
    assert abs(removed - 1000) <= 50
    assert (w[mask & ~out].abs() < threshold).all() and (w[out].abs() >= threshold).all()


def test_global_magnitude_uses_one_threshold_across_matrices():
    a = torch.tensor([0.1, 0.2, 5.0])
    b = torch.tensor([0.05, 3.0, 4.0, 0.3])
    masks = {"a": torch.ones(3, dtype=torch.bool), "b": torch.ones(4, dtype=torch.bool)}
    out = modes.global_magnitude_death({"a": a, "b": b}, masks, 3)
    assert out["a"].tolist() == [False, False, True] and out["b"].tolist() == [False, True, True, True]


def test_gradient_growth_picks_largest_gradient_among_inactive_positions():
    mask = torch.tensor([[True, False, False], [False, True, False]])
    grad = torch.tensor([[100.0, -0.5, 0.1], [2.0, 50.0, -3.0]])  # large values at active positions are ignored
    out = modes.score_growth(mask, 2, grad)
    assert out.tolist() == [[True, False, False], [True, True, True]]


def test_momentum_growth_uses_the_momentum_magnitude():
    mask = torch.zeros(6, dtype=torch.bool)
    momentum = torch.tensor([0.1, -0.9, 0.3, 0.0, -0.2, 0.8])
    assert modes.score_growth(mask, 2, momentum).nonzero().flatten().tolist() == [1, 5]


def test_random_growth_activates_exactly_k_inactive_positions():
    mask = torch.rand(50, 40, generator=torch.Generator().manual_seed(1)) < 0.3
    out = modes.random_growth(mask, 123, torch.Generator().manual_seed(2))
    assert int(out.sum() - mask.sum()) == 123 and bool((out | ~mask).all()) and bool(out[mask].all())


@pytest.mark.parametrize("mode", ["magnitude", "nonzeros", "momentum"])
def test_redistribution_moves_budget_toward_the_favoured_matrix(mode):
    # "big" is favoured by every mode: larger weights, more non-zeros, larger momentum
    weights = {"small": torch.full((10, 10), 0.1), "big": torch.full((10, 10), 1.0)}
    masks = {"small": torch.zeros(10, 10, dtype=torch.bool), "big": torch.zeros(10, 10, dtype=torch.bool)}
    masks["small"].view(-1)[:20] = True
    masks["big"].view(-1)[:60] = True
    momenta = {"small": torch.full((10, 10), 0.01), "big": torch.full((10, 10), 0.5)}
    if mode == "nonzeros":
        weights["small"].fill_(1.0)
    if mode == "momentum":
        weights["small"].fill_(1.0)
        masks["small"].view(-1)[:60] = True
    scores = modes.redistribution_scores(mode, weights, masks, momenta)
    capacity = {n: 100 - int(m.sum()) for n, m in masks.items()}
    budget = modes.allocate(30, scores, capacity)
    assert sum(budget.values()) == 30 and budget["big"] > budget["small"]


def test_allocate_respects_capacity_and_sums_exactly():
    budget = modes.allocate(100, {"a": 10.0, "b": 1.0, "c": 1.0}, {"a": 5, "b": 200, "c": 200})
    assert budget["a"] == 5 and sum(budget.values()) == 100 and abs(budget["b"] - budget["c"]) <= 1


def test_erdos_renyi_densities_follow_the_formula_and_meet_the_target():
    shapes = {"emb": (10000, 200), "w_ih": (800, 200), "w_hh": (800, 200), "dec": (10000, 200), "tiny": (4, 3)}
    densities = modes.erdos_renyi_densities(shapes, 0.33)
    assert densities["tiny"] == 1.0  # would exceed 1: made dense
    raw = {n: (s[0] + s[1]) / (s[0] * s[1]) for n, s in shapes.items()}
    eps = densities["emb"] / raw["emb"]
    for name in ("w_ih", "w_hh", "dec"):
        assert densities[name] == pytest.approx(eps * raw[name])
    numel = {n: math.prod(s) for n, s in shapes.items()}
    counts = modes.nonzero_counts(numel, densities)
    for name in shapes:
        assert abs(counts[name] - densities[name] * numel[name]) <= 1  # within one weight per matrix
    assert sum(counts.values()) == round(0.33 * sum(numel.values()))


def test_cosine_and_gmp_schedules():
    assert modes.cosine_death_rate(0, 100, 0.5, 0.1) == pytest.approx(0.5)
    assert modes.cosine_death_rate(50, 100, 0.5, 0.1) == pytest.approx(0.3)
    assert modes.cosine_death_rate(100, 100, 0.5, 0.1) == pytest.approx(0.1)
    assert modes.gmp_density(0, 0, 100, 0.2) == 1.0 and modes.gmp_density(100, 0, 100, 0.2) == pytest.approx(0.2)
    # Zhu & Gupta: s_t = s_f (1 - (1 - t/T)^3) from s_i = 0
    assert modes.gmp_density(50, 0, 100, 0.2) == pytest.approx(1 - 0.8 * (1 - 0.5**3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("largest", [False, True])
def test_select_lowest_matches_a_sort_with_ties_broken_by_position(dtype, largest):
    generator = torch.Generator().manual_seed(7)
    score = torch.randint(0, 50, (40, 30), generator=generator).to(dtype) / 7  # many ties, and zeros
    candidates = torch.rand(40, 30, generator=generator) < 0.6
    for k in (0, 1, 17, 300, int(candidates.sum()), int(candidates.sum()) + 5):
        chosen = modes.select_lowest(score, candidates, k, largest=largest)
        assert int(chosen.sum()) == min(k, int(candidates.sum())) and not (chosen & ~candidates).any()
        flat_score, flat_cand = score.view(-1), candidates.view(-1)
        order = sorted((i for i in range(flat_score.numel()) if flat_cand[i]),
                       key=lambda i: (-flat_score[i] if largest else flat_score[i], i))
        assert set(chosen.view(-1).nonzero().flatten().tolist()) == set(order[:k])
