"""Hyperpruning (LSH) on a tiny corpus: elimination, insertion, continuation, failures, resume after
kill -9, the test split read once, and one-line errors for bad spaces and options."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
import torch

from sparsernn import checkpoint
from sparsernn.config import validate
from sparsernn.data.lm import Corpus
from sparsernn.errors import ConfigError
from sparsernn.runs import LAST
from sparsernn.search import Search, SearchSettings, load_space
from sparsernn.search import executor as executor_module
from sparsernn.search.ls_space import ls_distances, nearer_half
from sparsernn.search.samplers import propose
from sparsernn.search.space import SearchSpace

from conftest import cli_in_process
from figures import record_figures

SPACE = {"density": 0.4, "choices": {"method": ["set", "rigl", "selfish", "static"], "init": ["uniform", "er"]},
         "ranges": {"death_rate": {"low": 0.4, "high": 0.9}}}
# e0 = 1 and the paper's LS rule: these tests' candidates differ from epoch 1 (two inits over every weight)
FAST = {"k": 8, "samples": 3, "steps": 20, "seed": 5, "e0": 1, "rank_by": "ls"}


def base_config(corpus_dir, epochs: int = 4):
    return validate({"data": {"dir": str(corpus_dir), "batch_size": 8, "eval_batch_size": 4, "bptt": 10,
                              "epoch_tokens": 800},
                     "model": {"hidden_sizes": [16, 16]}, "optim": {"lr": 10.0, "clip": 0.5},
                     "train": {"epochs": epochs, "device": "cpu", "log_interval": 1000}}, "test")


def run_search(tmp_path, corpus_dir, name="s", space=SPACE, **settings) -> tuple[Search, dict]:
    search = Search(tmp_path / name, SearchSpace.model_validate(space), base_config(corpus_dir),
                    SearchSettings(**{**FAST, **settings}), reference_dir=tmp_path / "references")
    return search, search.run()


@pytest.fixture(scope="module")
def tpe_search(synthetic_dir, tmp_path_factory):
    """The search, its report, and what its figures drew (by file name)."""
    with pytest.MonkeyPatch.context() as patch:
        drawn = record_figures(patch)
        search, report = run_search(tmp_path_factory.mktemp("tpe"), synthetic_dir, n=8, survivors=2, sampler="tpe")
    return search, report, drawn


def test_nearer_half_keeps_exactly_the_nearer_half():
    kept, dropped = nearer_half({"a": 0.3, "b": 0.1, "c": 0.2, "d": 0.9, "e": 0.2})
    assert kept == ["b", "c", "e"] and dropped == ["a", "d"]


def test_pca2_distance_is_zero_for_the_reference_and_grows_with_the_gap():
    ref = {0: [0.0, -1.0, -2.0], 1: [0.1, -0.9, -2.1]}
    near = {0: [0.0, -1.0, -2.0], 1: [0.2, -0.9, -2.0]}
    far = {0: [0.0, -1.0, -2.0], 1: [1.0, 0.5, -1.0]}
    pca, points = ls_distances(ref, {"near": near, "far": far, "same": ref}, 1, "pca2")
    assert pca["same"] == pytest.approx(0.0, abs=1e-12) and pca["near"] < pca["far"]
    assert set(points) == {"reference", "near", "far", "same"} and set(points["far"]) == {0, 1}
    raw, _ = ls_distances(ref, {"far": far}, 1, "raw", k=2)
    assert raw["far"] == pytest.approx(((1.0 - 0.1) ** 2 + (0.5 + 0.9) ** 2) ** 0.5)
    # k beyond the state's size means all exponents (a tagger's 10-unit state under the default k=64)
    assert ls_distances(ref, {"far": far}, 1, "raw", k=64)[0] == ls_distances(ref, {"far": far}, 1, "raw")[0]
    with pytest.raises(ValueError, match="spectra of different lengths"):
        ls_distances(ref, {"short": {0: [0.0, -1.0], 1: [0.1, -1.0]}}, 1, "raw", k=64)


def test_rounds_eliminate_the_farther_half_and_insert_a_quarter_from_the_archive(tpe_search):
    search, report, _ = tpe_search
    rows = {r["name"]: r for r in report["candidates"]}
    first = {n: r["scores"][1] for n, r in rows.items() if n.startswith("r0-")}
    kept, _ = nearer_half(first)
    assert len(first) == 8 and len(kept) == 4
    assert {n for n in first if rows[n]["epoch"] > 1} == set(kept)  # only the nearer half trained on
    inserted = sorted(n for n in rows if n.startswith("r1-"))
    assert len(inserted) == 8 // 4
    archive = [(rows[n]["params"], first[n]) for n in sorted(first)]
    expected = propose("tpe", search.space, archive, 2, __import__("sparsernn.search.lsh", fromlist=["_seed"])._seed(5, 1),
                       [rows[n]["params"] for n in sorted(first)])
    assert [rows[n]["params"] for n in inserted] == expected
    for n in inserted:
        # brought up to the survivors' epoch 2 from scratch (validated after epochs 1 and 2), then ranked
        # first in round 1, at epoch 2 (never at epoch 1: it did not exist in round 0), and at every
        # ranking after that while it stayed in the search
        row = rows[n]
        assert row["round"] == 1 and row["epoch"] >= 2
        assert sorted(row["val_ppl"]) == list(range(1, row["epoch"] + 1))
        assert sorted(row["scores"]) == list(range(2, max(row["scores"]) + 1))
    assert report["phase"] == "done" and rows[report["winner"]]["status"] == "winner"
    assert sum(r["status"] in ("winner", "survivor") for r in rows.values()) == 2


def test_survivors_continue_from_their_checkpoints(tpe_search, synthetic_corpus, tmp_path):
    search, report, _ = tpe_search
    winner = report["winner"]
    run = search.out / "candidates" / winner
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h.get("epoch") for h in history] == [1, 2, 3, 4, None]  # every epoch once: never restarted
    # the same config trained straight through ends with bit-identical weights
    from sparsernn.train import Trainer

    straight = Trainer(search.candidate_config(winner), synthetic_corpus, tmp_path / "straight")
    straight.fit()
    tensors, meta = checkpoint.load(run / LAST)
    assert meta["epoch"] == 5
    for key, value in straight.model.state_dict().items():
        assert torch.equal(tensors[f"model.{key}"], value), key


def test_report_accounts_for_the_budget_and_draws_the_plots(tpe_search):
    search, report, drawn = tpe_search
    budget = report["budget"]
    assert budget["reference"]["epochs"] >= 3 and budget["final"]["epochs"] >= 2
    assert budget["round 0"]["epochs"] == 8 and budget["round 0"]["ls_seconds"] > 0
    assert report["time_to_target"] and report["test"]["winner"] == report["winner"]
    assert json.loads((search.out / "report.json").read_text())["winner"] == report["winner"]

    # the plots the report lists are the ones drawn, and they draw the search's numbers
    rounds = sorted((search.out / "ls_space").glob("round-*.json"))
    assert len(rounds) == 3  # rankings after epochs 1, 2 and 3 of 4
    curves = ["score_vs_epoch.png", "val_ppl_vs_epoch.png", "time_to_target.png"]
    assert [p.rsplit("/", 1)[-1] for p in report["plots"]] == list(drawn) == \
        [f"ls_space_{r.stem}.png" for r in rounds] + curves
    rows = report["candidates"]
    for points_file in rounds:  # each candidate's path in LS space, and the dense reference's, in black
        points = json.loads(points_file.read_text())
        lines = drawn[f"ls_space_{points_file.stem}.png"].panel.labelled_lines()
        assert set(lines) == set(points) and "reference" in points and len(points) > 2
        for name, by_epoch in points.items():
            epochs = sorted(by_epoch, key=int)
            assert lines[name].x.tolist() == [by_epoch[e][0] for e in epochs]
            assert lines[name].y.tolist() == [by_epoch[e][1] for e in epochs]
        assert lines["reference"].color == (0.0, 0.0, 0.0, 1.0)
    reference = report["reference"]
    assert reference["complete"] and sorted(reference["val_ppl"]) == [1, 2, 3, 4]  # the dense model, to the end
    for key, filename in (("scores", "score_vs_epoch.png"), ("val_ppl", "val_ppl_vs_epoch.png")):
        panel = drawn[filename].panel
        lines = panel.labelled_lines()
        candidates = {f"{r['name']} ({r['status']})" for r in rows}  # every candidate, with its fate
        assert set(lines) == (candidates | {"dense reference"} if key == "val_ppl" else candidates)
        for row in rows:
            line = lines[f"{row['name']} ({row['status']})"]
            assert line.x.tolist() == sorted(row[key]) and line.y.tolist() == [row[key][e] for e in sorted(row[key])]
        # more than 10 candidates stay distinguishable: no two share colour and dash
        styles = [(line.color, line.linestyle) for name, line in lines.items() if name != "dense reference"]
        assert len(set(styles)) == len(styles) == len(rows) > 10
    dense = drawn["val_ppl_vs_epoch.png"].panel.line("dense reference")
    assert dense.x.tolist() == [1, 2, 3, 4] and dense.y.tolist() == [reference["val_ppl"][e] for e in (1, 2, 3, 4)]
    assert drawn["score_vs_epoch.png"].panel.ylabel == "LS distance"
    assert drawn["val_ppl_vs_epoch.png"].panel.yscale == "log"
    curve = report["time_to_target"]
    target = drawn["time_to_target.png"].panel
    step = target.line("best validation perplexity any candidate showed")  # against the compute spent
    assert step.drawstyle == "steps-post" and target.ylabel == "validation perplexity"
    assert step.x.tolist() == [c[0] for c in curve] + [report["compute_seconds"]]
    assert step.y.tolist() == [c[1] for c in curve] + [curve[-1][1]]
    assert all(a > b for a, b in zip(step.y[:-2], step.y[1:-1]))  # each point a new best
    assert step.y[-2] == min(ppl for r in rows for ppl in r["val_ppl"].values()) == report["best_seen"]["value"]
    winner = next(r for r in rows if r["name"] == report["winner"])
    (won,) = [line for name, line in target.labelled_lines().items() if name.startswith(f"winner {winner['name']}")]
    (flat,) = set(won.y.tolist())  # the winner drawn where the best found ends: they agree
    assert flat == winner["best_val_ppl"] <= report["best_seen"]["value"]
    assert set(target.line(f"dense reference: {reference['best_val_ppl']:.2f}").y.tolist()) == \
        {reference["best_val_ppl"]}


def test_grid_never_inserts(synthetic_dir, tmp_path):
    space = {"density": 0.4, "choices": {"init": ["uniform", "er"], "death": ["magnitude", "set"]},
             "fixed": {"method": "selfish", "death_rate": 0.8}}
    search, report = run_search(tmp_path, synthetic_dir, space=space, sampler="grid", survivors=1)
    names = [r["name"] for r in report["candidates"]]
    assert sorted(names) == ["r0-00", "r0-01", "r0-02", "r0-03"]
    assert [r["params"] for r in sorted(report["candidates"], key=lambda r: r["name"])] == search.space.grid()


@dataclass(frozen=True)
class CountingCorpus(Corpus):
    """Counts how often the test split is asked for."""

    def split(self, name):
        if name == "test":
            TEST_READS.append(1)
        return super().split(name)


TEST_READS: list[int] = []


def test_a_diverging_candidate_is_failed_and_the_test_split_is_read_once_at_the_end(synthetic_dir, tmp_path,
                                                                                       monkeypatch):
    from sparsernn.data import load_corpus

    plain = load_corpus(synthetic_dir)
    counting = CountingCorpus(plain.directory, plain.vocab, plain.train, plain.valid, plain.test)
    monkeypatch.setitem(executor_module.CORPORA, ("lm", str(synthetic_dir)), counting)
    TEST_READS.clear()
    space = {"density": 0.4, "choices": {"method": ["set", "static"], "optim.lr": [10.0, 1.0e38]},
             "fixed": {"optim.clip": None}}  # lr 1e38 unclipped: the loss is inf within ten steps
    search, report = run_search(tmp_path, synthetic_dir, space=space, sampler="grid", survivors=1)
    failed = [r for r in report["candidates"] if r["status"] == "failed"]
    assert {r["params"]["optim.lr"] for r in failed} == {1.0e38} and len(failed) == 2
    assert all("training diverged" in r["failed"] for r in failed)
    assert report["winner"] and report["winner_config"]["optim"]["lr"] == 10.0
    assert len(TEST_READS) == 1 and report["test"]["test_ppl"] > 1


def test_a_search_killed_mid_round_resumes_to_the_same_choices(synthetic_dir, tmp_path):
    args = ["hyperprune", "--preset", "tiny", "--data-dir", str(synthetic_dir), "--epochs", "4",
            "--set", "model.hidden_sizes=[16,16]", "--set", "data.epoch_tokens=800", "--set", "data.batch_size=8",
            "--set", "data.eval_batch_size=4", "--set", "data.bptt=10", "--set", "train.device=cpu",
            "--n", "8", "--survivors", "2", "--k", "8", "--samples", "3", "--steps", "20", "--seed", "5",
            "--reference-dir", str(tmp_path / "references")]
    straight = cli_in_process(*args, "--out", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", "import torch; torch.set_num_threads(1); from sparsernn.cli import "
                             "main; main()", *args, "--workers", "1", "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "candidates" / "r1-00" / LAST).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "report.json").exists()  # killed mid-search
    resumed = cli_in_process("hyperprune", "--resume", killed)
    assert resumed.returncode == 0, resumed.stderr
    ours, theirs = (json.loads((d / "report.json").read_text()) for d in (killed, tmp_path / "straight"))
    assert ours["winner"] == theirs["winner"] and ours["test"] == theirs["test"]
    strip = [{k: r[k] for k in ("name", "params", "status", "epoch", "scores", "val_ppl")} for r in ours["candidates"]]
    assert strip == [{k: r[k] for k in ("name", "params", "status", "epoch", "scores", "val_ppl")}
                     for r in theirs["candidates"]]


@pytest.mark.parametrize("text,message", [
    ("density: 1.5\nchoices: {method: [set]}\n", r"density: Input should be less than 1"),
    ("density: 0.3\nchoices: {method: [set, magic]}\n", r"sparsity\.method 'magic': a search covers masked methods"),
    ("density: 0.3\nchoices: {method: [dense]}\n", r"a search covers masked methods"),
    ("density: 0.3\nchoices: {death: [magnitude, sideways]}\nfixed: {method: set}\n", r"sparsity\.death: Input should be"),
    ("density: 0.3\nchoices: {bogus: [1, 2]}\nfixed: {method: set}\n", r"choices\.sparsity\.bogus: not a config field"),
    ("density: 0.3\nranges: {death_rate: {low: 0.9, high: 0.4}}\nfixed: {method: set}\n", r"low \(0\.9\) must be below"),
    ("density: 0.3\nchoices: {init: [er]}\nfixed: {init: er, method: set}\n", r"in both choices and fixed"),
    ("density: 0.3\nchoices: {init: [er]}\n", r"must name sparsity\.method"),
    ("density: [0.3\n", r"line 1.* is not valid YAML|is not valid YAML"),
    ("- a\n- b\n", r"expected a mapping"),
])
def test_bad_search_spaces_are_one_line(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_space(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bad_options_are_one_line(tmp_path, synthetic_dir):
    cases = [
        (["--sampler", "annealing"], "--sampler: Input should be 'grid', 'random', 'tpe' or 'atpe'"),
        (["--n", "1"], "--n: Input should be greater than or equal to 2"),
        (["--survivors", "8", "--n", "8"], "survivors (8) must be fewer than the initial candidates n (8)"),
        (["--space", "nowhere"], "unknown search space 'nowhere'; presets: demo, paper"),
        (["--space", "paper", "--sampler", "tpe", "--e0", "13"], "e0 (13) must be shorter than the schedule"),
        (["--resume", tmp_path / "none"], "no search to resume here"),
    ]
    for args, expected in cases:
        result = cli_in_process("hyperprune", "--data-dir", synthetic_dir, "--out", tmp_path / "x", *args) \
            if "--resume" not in args else cli_in_process("hyperprune", *args)
        line = result.one_line_error()
        assert expected in line, (args, line)


def test_the_paper_space_is_the_24_point_grid():
    space = load_space("paper")
    # Selfish-RNN's grid: 2 sparse inits x 4 death modes x 3 redistribution modes, at density 0.33 with
    # the method, growth and death rate fixed
    inits, deaths = ["uniform", "er"], ["magnitude", "set", "threshold", "global_magnitude"]
    redistributions = ["none", "magnitude", "nonzeros"]
    assert space.density == 0.33 and space.ranges == {}
    assert space.fixed == {"sparsity.method": "selfish", "sparsity.growth": "random", "sparsity.death_rate": 0.8}
    expected = [{"sparsity.init": i, "sparsity.death": d, "sparsity.redistribution": r}
                for i, d, r in itertools.product(inits, deaths, redistributions)]
    grid = space.grid()
    assert len(grid) == 24 and grid == expected  # in this order: candidates r0-00 .. r0-23
    # 24 different runs: each point gives a candidate config of its own, the fixed settings applied
    base = base_config("unused")
    configs = [space.candidate_config(base, point).sparsity for point in grid]
    assert len({c.model_dump_json() for c in configs}) == 24
    for config, point in zip(configs, grid):
        assert (config.method, config.density, config.growth, config.death_rate) == ("selfish", 0.33, "random", 0.8)
        assert (config.init, config.death, config.redistribution) == (
            point["sparsity.init"], point["sparsity.death"], point["sparsity.redistribution"])


def test_hyperband_on_loss_stops_candidates_early_and_picks_a_completed_one(synthetic_dir, tmp_path):
    search, report = run_search(tmp_path, synthetic_dir, strategy="hyperband", sampler="tpe", n=6, survivors=1)
    rows = {r["name"]: r for r in report["candidates"]}
    assert len(rows) == 6 and all(name.startswith("hb") for name in rows)
    statuses = [r["status"] for r in rows.values()]
    assert "pruned" in statuses and "complete" in statuses  # some stopped early, some ran the whole schedule
    assert all(r["epoch"] < 4 for r in rows.values() if r["status"] == "pruned")
    assert rows[report["winner"]]["epoch"] == 4 and report["test"]["winner"] == report["winner"]
    # loss needs no dense reference to rank: it trains once, to the end, for the report (dense_to_end)
    assert report["budget"]["reference"]["epochs"] == 4 and report["reference"]["complete"]


def test_atpe_proposals_are_points_of_the_space_and_repeatable():
    pytest.importorskip("hyperopt")
    space = load_space("demo")
    archive = [({"sparsity.method": m, "sparsity.init": i, "sparsity.death_rate": r}, score)
               for m, i, r, score in [("set", "er", 0.5, 0.3), ("rigl", "uniform", 0.8, 0.1), ("snfs", "er", 0.6, 0.5),
                                      ("selfish", "uniform", 0.45, 0.2), ("set", "uniform", 0.7, 0.4)]]
    first = propose("atpe", space, archive, 3, 11, [p for p, _ in archive])
    assert first == propose("atpe", space, archive, 3, 11, [p for p, _ in archive])
    for point in first:
        assert point["sparsity.method"] in space.choices["sparsity.method"]
        assert 0.4 <= point["sparsity.death_rate"] <= 0.9


@pytest.mark.slow
def test_worker_processes_train_candidates_like_this_process(synthetic_dir, tmp_path):
    from sparsernn.search.executor import Job, LocalExecutor, LSOptions

    space = SearchSpace.model_validate(SPACE)
    base = base_config(synthetic_dir, epochs=2)
    points = [{"sparsity.method": "set", "sparsity.init": "er", "sparsity.death_rate": 0.5},
              {"sparsity.method": "static", "sparsity.init": "uniform", "sparsity.death_rate": 0.5}]
    ls = LSOptions(k=8, samples=3, steps=20)

    def jobs(root):
        return [Job(f"c{i}", space.candidate_config(base, p).to_dict(), str(root / f"c{i}"), 2, ls)
                for i, p in enumerate(points)]

    here = LocalExecutor(1).run(jobs(tmp_path / "here"))
    there = LocalExecutor(2).run(jobs(tmp_path / "there"))
    for a, b in zip(here, there):
        assert a.failed is None and b.failed is None
        assert a.val_loss == b.val_loss and a.spectra == b.spectra  # one thread each: the same numbers
