"""A search ranks by any registered rule: what each rule reads is stored with each candidate, and the
candidates it keeps are exactly the ones the rule orders first."""

from __future__ import annotations

import pytest

from sparsernn.search import SearchSettings
from sparsernn.search.ranking import RULES, Evidence, RankingRule

from test_search import run_search


def evidence_at(rows, epoch):
    ranked = [r for r in rows if str(epoch) in r["scores"]]
    return ranked, Evidence({r["name"]: r["val_losses"][str(epoch)] for r in ranked},
                            {r["name"]: r["distances"][str(epoch)] for r in ranked} if "distances" in ranked[0]
                            else None)


def test_a_pareto_search_keeps_what_the_rule_orders_first(synthetic_dir, tmp_path):
    search, report = run_search(tmp_path, synthetic_dir, n=6, survivors=2, rank_by="pareto", sampler="random",
                                keep_best=False)
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
                                sampler="random", dense_to_end=False)
    trials = search.candidates()
    assert len(trials) == 5 and not (tmp_path / "references").exists()  # no spectra, no reference
    losses = {n: t.user_attrs["val_losses"]["1"] for n, t in trials.items()}
    best_two = sorted(losses, key=lambda n: (losses[n], n))[:2]
    assert sorted(n for n, t in trials.items() if t.user_attrs.get("status") in ("winner", "survivor")) == \
        sorted(best_two)
    assert all(t.user_attrs["eliminated"] == {"epoch": 1, "rule": "loss"}
               for n, t in trials.items() if n not in best_two)
    assert report["winner"] in best_two


@pytest.mark.parametrize("keep_best", [True, False])
def test_the_best_model_seen_is_never_eliminated_unless_asked(synthetic_dir, tmp_path, monkeypatch, keep_best):
    """A rule that ranks the highest validation loss first: left alone it eliminates the best model;
    with keep_best (the default) the holder of the best score seen survives and the winner is no worse."""
    worst_first = RankingRule("worst_first", "highest validation loss first (a test's perverse rule)", False,
                              lambda evidence: {n: -v for n, v in evidence.val_loss.items()})
    monkeypatch.setitem(RULES._entries, "worst_first", worst_first)
    search, report = run_search(tmp_path, synthetic_dir, n=6, survivors=2, rank_by="worst_first", sampler="random",
                                keep_best=keep_best)
    rows = search.rows()
    seen = search.best_seen(rows)
    winner = next(r for r in rows if r["name"] == report["winner"])
    first_best = min((r for r in rows if 1 in r["val_ppl"]), key=lambda r: r["val_ppl"][1])
    if keep_best:
        assert seen["status"] in ("winner", "survivor") and winner["best_val_ppl"] <= seen["value"]
        assert first_best["eliminated"] is None or first_best["eliminated"]["epoch"] > 1
    else:  # the rule alone: the best model after epoch 1 goes first
        assert first_best["eliminated"] == {"epoch": 1, "rule": "worst_first"}


def _report(winner_value: float, seen: dict) -> dict:
    rows = [{"name": "r0-00", "params": {"sparsity.method": "selfish"}, "status": "winner", "epoch": 5,
             "scores": {1: 0.5}, "val_ppl": {5: winner_value}, "best_val_ppl": winner_value},
            {"name": "r2-00", "params": {"sparsity.method": "rigl", "sparsity.init": "er", "sparsity.death_rate":
                                         0.41666}, "status": "eliminated", "epoch": 3, "scores": {3: 2.0},
             "val_ppl": {3: 527.71}, "best_val_ppl": 527.71}]
    return {"metric": {"name": "ppl", "goal": "min"}, "candidates": rows, "winner": "r0-00",
            "winner_config": {"sparsity": {"method": "selfish"}}, "test": {"test_ppl": 690.0},
            "reference": {"val_ppl": {5: 352.0}, "best_val_ppl": 352.0, "epochs": 5, "complete": True},
            "best_seen": seen}


def test_the_winner_line_names_the_dense_reference_and_a_better_model_it_eliminated():
    from sparsernn.cli import winner_lines

    seen = {"name": "r2-00", "epoch": 3, "value": 527.71, "status": "eliminated",
            "eliminated": {"epoch": 3, "rule": "ls"}}
    lines = winner_lines(_report(699.85, seen))
    assert lines == ["winner r0-00: method=selfish; valid ppl 699.85, test ppl 690.00",
                     "dense reference: valid ppl 352.00; the winner is +98.8% from dense",
                     "best model seen: r2-00 at epoch 3, valid ppl 527.71 (eliminated at epoch 3 by rule ls); "
                     "the winner is 172.14 worse"]
    # a winner that is the best seen (or better) says nothing more
    assert len(winner_lines(_report(520.0, seen))) == 2


def test_the_leaderboard_keeps_every_configuration_whole_in_a_narrow_non_terminal_output():
    import io

    from rich.console import Console

    from sparsernn.search.report import describe_params, leaderboard

    rows = _report(699.85, {})["candidates"]
    for row in rows:
        row["params"] = {**row["params"], "sparsity.redistribution": "magnitude", "sparsity.growth": "gradient"}
    buffer = io.StringIO()
    Console(file=buffer, width=80, force_terminal=False).print(leaderboard(rows, "tpe", "ls"))
    assert "…" not in buffer.getvalue()
    cells: dict[str, str] = {}  # candidate -> its configuration cell, the wrapped lines joined
    name = None
    for line in buffer.getvalue().splitlines():
        parts = line.split("│")
        if len(parts) < 4:
            continue
        name = parts[1].strip() or name
        cells[name] = cells.get(name, "") + " " + parts[2].strip()
    for row in rows:
        expected = describe_params(row["params"])
        assert "".join(cells[row["name"]].split()) == "".join(expected.split())


def test_a_ranking_of_candidates_that_are_still_one_model_waits_an_epoch(synthetic_dir, tmp_path):
    """One init, one seed: before the first mask update every candidate is the same model, so a ranking
    at epoch 1 could only break a tie by name; the search ranks first at epoch 2 instead."""
    space = {"density": 0.4, "choices": {"method": ["set", "rigl", "selfish", "snfs"]},
             "ranges": {"death_rate": {"low": 0.4, "high": 0.9}}, "fixed": {"init": "uniform"}}
    search, report = run_search(tmp_path, synthetic_dir, space=space, n=4, survivors=2, sampler="random", e0=1)
    trials = search.candidates()
    losses_at_1 = {t.user_attrs["val_losses"].get("1") for t in trials.values()}
    assert losses_at_1 == {None}  # nobody was ranked at epoch 1
    first = [t for t in trials.values() if t.user_attrs.get("scores")]
    first_epochs = [min(map(int, t.user_attrs["scores"])) for t in first]
    assert first_epochs.count(2) == 4 and min(first_epochs) == 2  # the initial 4 at epoch 2, insertions later
    at_2 = [t.user_attrs["val_losses"]["2"] for t in first if "2" in t.user_attrs["val_losses"]]
    assert len(set(at_2)) == len(at_2) == 4  # they differ by then
    assert all(t.user_attrs["eliminated"]["epoch"] >= 2 for t in trials.values() if "eliminated" in t.user_attrs)
    assert report["phase"] == "done"


def test_auto_workers_are_one_per_core_on_a_cpu_and_one_on_a_gpu():
    from sparsernn.search.settings import local_workers

    assert SearchSettings().workers == "auto"
    assert local_workers("auto", "cpu", n=8, cores=2) == 2
    assert local_workers("auto", "cpu", n=3, cores=16) == 3  # no more processes than initial candidates
    assert local_workers("auto", "cuda", n=8, cores=16) == 1
    assert local_workers(5, "cuda", n=8, cores=2) == 5  # a number is taken as given
    with pytest.raises(ValueError):
        SearchSettings(workers=0)
