"""Ranking rules of the search: pure functions from the candidates' evidence to their order."""

from __future__ import annotations

import pytest

from sparsernn.search.ranking import LOSS_BAND, RULES, Evidence, decide, pareto_fronts, ranks

# a: nearest the reference, worst loss; b: best loss, far; c: good on both; g: just behind c on both
EVIDENCE = Evidence(val_loss={"a": 7.0, "b": 5.0, "c": 5.1, "d": 6.5, "e": 5.5, "g": 5.12},
                    distance={"a": 0.1, "b": 2.0, "c": 0.3, "d": 3.0, "e": 1.0, "g": 0.35})


def test_ranks_share_ties_and_fronts_follow_dominance():
    assert ranks({"x": 2.0, "y": 1.0, "z": 2.0}) == {"y": 1.0, "x": 2.5, "z": 2.5}
    assert pareto_fronts(EVIDENCE.distance, EVIDENCE.val_loss) == {"a": 0, "b": 0, "c": 0, "g": 1, "e": 2, "d": 3}
    assert pareto_fronts({"p": 1.0, "q": 1.0}, {"p": 1.0, "q": 2.0}) == {"p": 0, "q": 1}  # equal on one, worse on the other


@pytest.mark.parametrize("rule, order", [
    ("ls", ["a", "c", "g", "e", "b", "d"]),
    ("loss", ["b", "c", "g", "e", "d", "a"]),
    # rank sums: c 2+2, b 5+1, g 3+3 (tie with b: by name), a 1+6, e 4+4, d 6+5
    ("rank_sum", ["c", "b", "g", "a", "e", "d"]),
    # front 0 {a, b, c} by rank sum first, although g's rank sum is below a's
    ("pareto", ["c", "b", "a", "g", "e", "d"]),
])
def test_each_rule_orders_the_evidence(rule, order):
    assert RULES[rule].order(EVIDENCE) == order


def test_ls_band_ranks_by_distance_only_among_the_losses_within_noise_of_the_best():
    evidence = Evidence(val_loss={"a": 5.0, "b": 5.0 + LOSS_BAND / 2, "c": 5.0 + 2 * LOSS_BAND, "d": 5.3},
                        distance={"a": 0.9, "b": 0.2, "c": 0.0, "d": 0.1})
    # a and b are within the band: b (nearer) first; c and d follow by loss although nearer
    assert RULES["ls_band"].order(evidence) == ["b", "a", "c", "d"]


def test_rules_that_read_distances_say_so_without_spectra():
    no_spectra = Evidence(val_loss={"a": 1.0, "b": 2.0})
    assert RULES["loss"].order(no_spectra) == ["a", "b"] and not RULES["loss"].needs_spectra
    for rule in ("ls", "pareto", "rank_sum", "ls_band"):
        assert RULES[rule].needs_spectra
        with pytest.raises(ValueError, match="reads LS distances, and no spectra were measured"):
            RULES[rule].order(no_spectra)


def test_decide_halves_until_the_survivors_are_decided():
    order = [f"c{i}" for i in range(8)]
    halved = decide(order, survivors=2, insertions=2, last_round=False)
    assert (halved.kept, halved.eliminated, halved.final) == (order[:4], order[4:], False)
    # 4 ranked, 1 insertion: 2 + 1 > 2 still halves; 3 ranked and no insertion: 2 <= 2 decides
    assert not decide(order[:4], 2, 1, False).final
    decided = decide(order[:3], 2, 0, False)
    assert (decided.kept, decided.eliminated, decided.final) == (order[:2], order[2:3], True)
    assert decide(order, 2, 2, last_round=True).kept == order[:2]
    top = decide(order, 3, 2, last_round=False, top_k=True)  # one-epoch top-K: the first ranking decides
    assert (top.kept, top.final) == (order[:3], True)


def test_the_holder_of_the_best_validation_score_is_never_eliminated():
    order = [f"c{i}" for i in range(8)]
    halved = decide(order, 2, 2, False, protect="c6")
    assert halved.kept == ["c0", "c1", "c2", "c6"] and halved.eliminated == ["c3", "c4", "c5", "c7"]
    final = decide(order[:3], 2, 0, False, protect="c2")
    assert final.final and final.kept == ["c0", "c2"] and final.eliminated == ["c1"]
    assert decide(order, 2, 2, False, protect="c1").kept == order[:4]  # kept anyway: nothing changes
