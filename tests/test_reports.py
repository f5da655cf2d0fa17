"""What the reports say, cell by cell: the hyperprune leaderboard, report.json and the search's plots
(search/report.py), and a masked model's density report and table (sparsity/report.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sparsernn.config import ModelConfig
from sparsernn.models import RNNLanguageModel
from sparsernn.search.report import _strict, leaderboard, plot_search, write_report
from sparsernn.sparsity.masks import Masking, prunable_parameters
from sparsernn.sparsity.report import density_report, density_table

from figures import record_figures


def cells(table) -> list[list[str]]:
    """A rich table's rows, as the strings in its cells."""
    columns = [list(column.cells) for column in table.columns]
    return [list(row) for row in zip(*columns)]


def row(name, status, epoch, scores, best=None, metric="ppl", **params):
    return {"name": name, "params": params or {"sparsity.method": "set"}, "status": status, "epoch": epoch,
            "scores": scores, f"best_val_{metric}": best}


# ---- the leaderboard ------------------------------------------------------------------------------

ROWS = [
    row("r0-00", "eliminated", 1, {1: 0.9}, 150.0, **{"sparsity.method": "set", "sparsity.death_rate": 0.123456}),
    row("r0-01", "alive", 2, {1: 0.5, 2: 0.2}, 120.456, **{"sparsity.method": "rigl", "optim.lr": 10.0}),
    row("r0-02", "alive", 2, {1: 0.1, 2: 0.3}, 118.0),  # a better first score, but ranked by its latest
    row("r1-00", "alive", 0, {}, None),  # inserted, not ranked yet
    row("r0-03", "failed", 1, {}, None),
]


def test_the_leaderboard_ranks_by_the_latest_score_with_the_eliminated_last():
    table = leaderboard(ROWS, "tpe", "ls", "ppl", scores={"r0-01": 0.2, "r0-02": 0.3})
    assert table.title == "hyperprune leaderboard (tpe, ranked by LS distance)"
    assert [c.header for c in table.columns] == ["candidate", "configuration", "status", "epoch", "LS distance",
                                                 "best val ppl"]
    assert cells(table) == [
        ["r0-01", "method=rigl optim.lr=10", "alive *", "2", "0.2", "120.46"],  # *: ranked in this round
        ["r0-02", "method=set", "alive *", "2", "0.3", "118.00"],
        ["r1-00", "method=set", "alive", "0", "-", "-"],
        ["r0-00", "method=set death_rate=0.123", "eliminated", "1", "0.9", "150.00"],
        ["r0-03", "method=set", "failed", "1", "-", "-"],
    ]
    assert [c.justify for c in table.columns] == ["left", "left", "left", "right", "right", "right"]


def test_a_leaderboard_by_loss_of_a_tagger_shows_accuracy():
    rows = [row("a", "alive", 1, {1: 0.75}, 0.875, metric="accuracy"),
            row("b", "alive", 1, {1: 0.5}, 0.9, metric="accuracy")]
    table = leaderboard(rows, "random", "loss", "accuracy")
    assert table.title == "hyperprune leaderboard (random, ranked by val loss)"
    assert [c.header for c in table.columns][-2:] == ["val loss", "best val accuracy"]
    assert cells(table) == [["b", "method=set", "alive", "1", "0.5", "90.00%"],
                            ["a", "method=set", "alive", "1", "0.75", "87.50%"]]


# ---- report.json and the search's plots -------------------------------------------------------------


def test_non_finite_numbers_become_null_at_any_depth():
    value = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf, "d": 2}], "e": (0.5, math.nan), "f": "nan"}
    assert _strict(value) == {"a": None, "b": [1.0, None, {"c": None, "d": 2}], "e": [0.5, None], "f": "nan"}


def search_report(metric="ppl", rank_by="ls") -> dict:
    key = f"val_{metric}"
    candidates = [
        {**row("r0-00", "winner", 3, {1: 0.4, 2: 0.3}, metric=metric), key: {1: 300.0, 2: 200.0, 3: 150.0}},
        {**row("r0-01", "eliminated", 1, {1: 0.9}, metric=metric), key: {1: 400.0}},
        {**row("r1-00", "failed", 0, {}, metric=metric), key: {}},  # failed before an epoch ended
    ]
    candidates[0][f"best_val_{metric}"] = 150.0
    return {"settings": {"rank_by": rank_by}, "metric": {"name": metric}, "candidates": candidates,
            "winner": "r0-00", "time_to_target": [[1.5, 400.0], [2.0, 300.0], [4.0, 150.0]],
            "compute_seconds": 6.5, "search_overhead": {"fraction": math.nan},
            "reference": {"complete": True, key: {"1": 250.0, "2": 140.0, "3": 120.0}, f"best_val_{metric}": 120.0}}


def test_write_report_saves_strict_json_and_plots_every_round_and_curve(tmp_path, monkeypatch):
    (tmp_path / "ls_space").mkdir()
    points = {"reference": {"1": [0.0, 0.0]}, "r0-00": {"1": [1.0, 2.0]}, "r0-01": {"1": [-3.0, 0.5]}}
    (tmp_path / "ls_space" / "round-0.json").write_text(json.dumps(points))
    later = {"reference": {"1": [0.0, 0.0], "2": [0.5, 0.0]}, "r0-00": {"1": [1.0, 2.0], "2": [0.75, 1.0]}}
    (tmp_path / "ls_space" / "round-1.json").write_text(json.dumps(later))
    drawn = record_figures(monkeypatch)
    report = write_report(tmp_path, search_report())
    names = ["ls_space_round-0.png", "ls_space_round-1.png", "score_vs_epoch.png", "val_ppl_vs_epoch.png",
             "time_to_target.png"]
    assert report["plots"] == [str(tmp_path / "plots" / name) for name in names] and list(drawn) == names
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["search_overhead"] == {"fraction": None} and saved["plots"] == report["plots"]
    assert saved["candidates"][0]["val_ppl"] == {"1": 300.0, "2": 200.0, "3": 150.0}

    first = drawn["ls_space_round-0.png"].panel  # each candidate's point, the reference in black
    assert first.title.startswith("LS space, round-0") and (first.xlabel, first.ylabel) == ("LS PC 1", "LS PC 2")
    assert {name: (line.x.tolist(), line.y.tolist()) for name, line in first.labelled_lines().items()} == {
        "reference": ([0.0], [0.0]), "r0-00": ([1.0], [2.0]), "r0-01": ([-3.0], [0.5])}
    assert first.line("reference").color == (0.0, 0.0, 0.0, 1.0) and first.texts == ["reference", "r0-00", "r0-01"]
    second = drawn["ls_space_round-1.png"].panel  # paths over the epochs
    assert second.line("r0-00").x.tolist() == [1.0, 0.75] and second.line("r0-00").y.tolist() == [2.0, 1.0]

    scores = drawn["score_vs_epoch.png"].panel  # a candidate without scores has no line
    assert scores.ylabel == "LS distance" and scores.yscale == "linear"
    assert {label: (line.x.tolist(), line.y.tolist()) for label, line in scores.labelled_lines().items()} == {
        "r0-00 (winner)": ([1, 2], [0.4, 0.3]), "r0-01 (eliminated)": ([1], [0.9])}
    assert scores.line("r0-00 (winner)").color != scores.line("r0-01 (eliminated)").color
    ppl = drawn["val_ppl_vs_epoch.png"].panel  # the candidates, and the dense model they are pruned from
    assert ppl.ylabel == "validation perplexity" and ppl.yscale == "log"
    assert ppl.line("r0-00 (winner)").y.tolist() == [300.0, 200.0, 150.0]
    dense = ppl.line("dense reference")
    assert dense.x.tolist() == [1, 2, 3] and dense.y.tolist() == [250.0, 140.0, 120.0]
    assert dense.color == (0.0, 0.0, 0.0, 1.0)
    assert ppl.legend == ["r0-00 (winner)", "r0-01 (eliminated)", "dense reference"]
    target = drawn["time_to_target.png"].panel
    step = target.line("best validation perplexity any candidate showed")  # held to the compute spent in all
    assert step.x.tolist() == [1.5, 2.0, 4.0, 6.5] and step.y.tolist() == [400.0, 300.0, 150.0, 150.0]
    assert step.drawstyle == "steps-post" and target.ylabel == "validation perplexity" and target.yscale == "log"
    assert target.line("winner r0-00: 150.00").y.tolist() == [150.0, 150.0]  # horizontal lines
    assert target.line("dense reference: 120.00").y.tolist() == [120.0, 120.0]


def test_a_taggers_search_plots_accuracy_on_a_linear_scale_and_skips_what_was_not_measured(tmp_path, monkeypatch):
    drawn = record_figures(monkeypatch)
    report = search_report(metric="accuracy", rank_by="loss")
    for candidate in report["candidates"]:
        candidate["scores"] = {}  # a full-training search ranks nothing
    report["time_to_target"], report["reference"] = [], None
    paths = plot_search(tmp_path, report)
    assert [p.name for p in paths] == list(drawn) == ["val_accuracy_vs_epoch.png"]  # no LS space, scores, target
    panel = drawn["val_accuracy_vs_epoch.png"].panel
    assert panel.ylabel == "validation accuracy" and panel.yscale == "linear"
    assert panel.line("r0-01 (eliminated)").y.tolist() == [400.0]


# ---- a masked model's density -----------------------------------------------------------------------


def masked_lm() -> RNNLanguageModel:
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(hidden_sizes=[4, 3]), vocab_size=10)
    masking = Masking(model, prunable_parameters(model, ["recurrent", "decoder"]))
    forget = torch.ones(16, 4, dtype=torch.bool)
    forget[4:8] = False  # layer 0's forget-gate rows
    masking.set("layers.0.weight_hh_l0", forget)
    decoder = torch.ones(10, 3, dtype=torch.bool)
    decoder[:, 0] = False
    masking.set("decoder.weight", decoder)
    masking.apply()
    return model


def test_the_density_report_counts_each_mask_and_each_gate():
    report = density_report(masked_lm())
    rows = {r["name"]: r for r in report["matrices"]}
    assert list(rows) == ["layers.0.weight_ih_l0", "layers.0.weight_hh_l0", "layers.1.weight_ih_l0",
                          "layers.1.weight_hh_l0", "decoder.weight"]  # masked weights only: no embedding
    hh = rows["layers.0.weight_hh_l0"]
    assert (hh["shape"], hh["nonzero"], hh["total"], hh["density"]) == ([16, 4], 48, 64, 0.75)
    assert hh["gates"] == {"i": 1.0, "f": 0.0, "g": 1.0, "o": 1.0}
    assert rows["layers.1.weight_ih_l0"]["gates"] == {"i": 1.0, "f": 1.0, "g": 1.0, "o": 1.0}
    decoder = rows["decoder.weight"]
    assert (decoder["nonzero"], decoder["total"]) == (20, 30) and "gates" not in decoder  # not a recurrent matrix
    total = 64 + 64 + 48 + 36 + 30  # W_ih, W_hh of both layers (16x4, 16x4, 12x4, 12x3) and the decoder (10x3)
    assert (report["nonzero"], report["total"]) == (total - 16 - 10, total)
    assert report["density"] == pytest.approx((total - 26) / total)


def test_a_model_without_masks_is_dense():
    model = RNNLanguageModel(ModelConfig(hidden_sizes=[4]), vocab_size=10)
    assert density_report(model) == {"matrices": [], "nonzero": 0, "total": 0, "density": 1.0}


def test_the_density_table_shows_every_matrix_and_the_total():
    table = density_table(density_report(masked_lm()), title="sparsity at end")
    assert table.title == "sparsity at end"
    assert [c.header for c in table.columns] == ["matrix", "shape", "non-zero", "density", "per gate"]
    rows = cells(table)
    assert rows[1] == ["layers.0.weight_hh_l0", "16x4", "48", "0.7500", "i 1.000  f 0.000  g 1.000  o 1.000"]
    assert rows[4] == ["decoder.weight", "10x3", "20", "0.6667", ""]
    assert rows[-1] == ["total", "", "216", f"{216 / 242:.4f}", ""] and len(rows) == 6
