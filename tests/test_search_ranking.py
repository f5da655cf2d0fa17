"""A search ranks by any registered rule: what each rule reads is stored with each candidate, and the
candidates it keeps are exactly the ones the rule orders first."""

from __future__ import annotations

from sparsernn.search.ranking import RULES, Evidence

from test_search import run_search


def evidence_at(rows, epoch):
    ranked = [r for r in rows if str(epoch) in r["scores"]]
    return ranked, Evidence({r["name"]: r["val_losses"][str(epoch)] for r in ranked},
                            {r["name"]: r["distances"][str(epoch)] for r in ranked} if "distances" in ranked[0]
                            else None)


def test_a_pareto_search_keeps_what_the_rule_orders_first(synthetic_dir, tmp_path):
    search, report = run_search(tmp_path, synthetic_dir, n=6, survivors=2, rank_by="pareto", sampler="random")
    rows = {r["name"]: r for r in search.report()["candidates"]}
    assert report["phase"] == "done" and report["settings"]["rank_by"] == "pareto"
    trials = search.candidates()
    first = [n for n, t in trials.items() if "1" in t.user_attrs.get("scores", {})]
    assert len(first) == 6
    full = {n: {**rows[n], **trials[n].user_attrs} for n in first}
    _, evidence = evidence_at(full.values(), 1)
    order = RULES["pareto"].order(evidence)
    kept = order[:3]  # 6 ranked, 1 insertion: the better half goes on
    for name in order:
        eliminated = trials[name].user_attrs.get("eliminated")
        if name in kept:  # on to the next round (where it may go)
            assert eliminated is None or eliminated["epoch"] > 1
        else:
            assert eliminated == {"epoch": 1, "rule": "pareto"}


def test_one_epoch_top_k_keeps_the_lowest_losses_after_the_first_epoch(synthetic_dir, tmp_path):
    search, report = run_search(tmp_path, synthetic_dir, n=5, survivors=2, rank_by="loss", strategy="top_k",
                                sampler="random")
    trials = search.candidates()
    assert len(trials) == 5 and not (tmp_path / "references").exists()  # no spectra, no reference
    losses = {n: t.user_attrs["val_losses"]["1"] for n, t in trials.items()}
    best_two = sorted(losses, key=lambda n: (losses[n], n))[:2]
    assert sorted(n for n, t in trials.items() if t.user_attrs.get("status") in ("winner", "survivor")) == \
        sorted(best_two)
    assert all(t.user_attrs["eliminated"] == {"epoch": 1, "rule": "loss"}
               for n, t in trials.items() if n not in best_two)
    assert report["winner"] in best_two
