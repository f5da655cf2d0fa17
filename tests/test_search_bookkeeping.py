"""The search's bookkeeping against an executor that trains nothing: what rounds run, what is charged
(also for a cached reference and after a kill), where time-to-target points fall, and that a
candidate whose failure was stored before a kill stays failed after the resume. The executor's
runs follow from their configs, so every figure here is exact."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest

from sparsernn.errors import ConfigError
from sparsernn.progress import SilentReporter
from sparsernn.search import Search, SearchSettings
from sparsernn.search.executor import Job, LocalExecutor, LSOptions, Progress, advance
from sparsernn.search.space import SearchSpace

from test_search import SPACE, base_config

TRAIN_SECONDS, LS_SECONDS = 1.0, 0.25


class FakeExecutor:
    """Each run's losses and spectra are a pure function of its sparsity settings; an epoch costs 1 s,
    a spectrum 0.25 s; a run continues where it stopped (its directory keeps how far it got)."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail = set(fail)
        self.jobs: list[Job] = []

    def run(self, jobs: list[Job]) -> list[Progress]:
        self.jobs += jobs
        return [self._advance(job) for job in jobs]

    def _advance(self, job: Job) -> Progress:
        if job.name in self.fail:
            return Progress(job.name, failed="forced to fail")
        run = Path(job.run_dir)
        run.mkdir(parents=True, exist_ok=True)
        stored = json.loads((run / "fake.json").read_text()) if (run / "fake.json").is_file() else \
            {"epoch": 0, "measured": []}
        before = stored["epoch"]
        reached = max(before, min(job.to_epoch, job.config["train"]["epochs"]))
        digest = hashlib.sha256(json.dumps(job.config["sparsity"], sort_keys=True).encode()).hexdigest()
        level = int(digest[:6], 16) / 16 ** 6  # this configuration's own quality, in [0, 1)
        measured = sorted(set(stored["measured"]) | (set(range(before, reached + 1)) if job.ls else set()))
        (run / "fake.json").write_text(json.dumps({"epoch": reached, "measured": measured}))
        progress = Progress(job.name, epoch=reached, epochs_trained=reached - before,
                            train_seconds=TRAIN_SECONDS * (reached - before),
                            ls_seconds=LS_SECONDS * len(set(measured) - set(stored["measured"])))
        progress.val_loss = {e: 5.0 + level + 2.0 / e for e in range(1, reached + 1)}
        progress.val_metric = {e: math.exp(v) for e, v in progress.val_loss.items()}
        if job.ls:
            progress.spectra = {state: {e: [-level * e / 10 - 0.1 * i for i in range(4)] for e in measured}
                                for state in job.ls.states}
        by = json.loads((run / "by.json").read_text()) if (run / "by.json").is_file() else {}
        by.update({str(e): job.owner for e in range(before + 1, reached + 1)})
        by.update({f"ls{e}": job.owner for e in set(measured) - set(stored["measured"])})
        (run / "by.json").write_text(json.dumps(by))
        progress.costs = {"train": {e: TRAIN_SECONDS for e in range(1, reached + 1)},
                          "ls": {e: LS_SECONDS for e in measured},
                          "train_by": {e: by[str(e)] for e in range(1, reached + 1)},
                          "ls_by": {e: by[f"ls{e}"] for e in measured}}
        return progress


class Killed(Exception):
    pass


class KillAt(SilentReporter):
    """Stops the driver (as a kill would) at the first message containing ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def message(self, text) -> None:
        if isinstance(text, str) and self.text in text:
            raise Killed(text)


@pytest.fixture
def no_test_split(monkeypatch, synthetic_dir):
    """The winner's test score without a checkpoint (the fake executor writes none)."""
    import sparsernn.runs
    import sparsernn.tasks

    class Scored:
        def evaluate(self, model, split):
            return {"loss": 5.0, "ppl": math.exp(5.0)}

    monkeypatch.setattr(sparsernn.runs, "load_model", lambda path: (None, base_config(synthetic_dir), None, None))
    monkeypatch.setattr(sparsernn.tasks, "build_task", lambda config, data, device="cpu": Scored())


def search(tmp_path, corpus_dir, name="s", executor=None, reporter=None, epochs=8, **settings) -> Search:
    return Search(tmp_path / name, SearchSpace.model_validate(SPACE), base_config(corpus_dir, epochs),
                  SearchSettings(**{"seed": 3, "keep_best": False, "dense_to_end": False, "e0": 1, "rank_by": "ls",
                                     **settings}), reference_dir=tmp_path / "references",
                  executor=executor or FakeExecutor(), reporter=reporter)


def test_the_round_that_reaches_the_survivors_count_decides_them(synthetic_dir, tmp_path, no_test_split):
    report = search(tmp_path, synthetic_dir, n=8, survivors=2).run()
    # 8 -> 4 kept + 2 inserted -> 3 + 1 -> 2 + 1 -> ranking 3 leaves 2: final, no round ranking 2 again
    rounds = sorted(k for k in report["budget"] if k.startswith("round"))
    assert rounds == ["round 0", "round 1", "round 2", "round 3"]
    # each round: the kept ones one epoch each, the inserted ones from scratch to the round's epoch
    assert [report["budget"][r]["epochs"] for r in rounds] == [8, 4 * 1 + 2 * 2, 3 * 1 + 1 * 3, 2 * 1 + 1 * 4]
    assert report["budget"]["reference"]["epochs"] == 4  # trained to the last ranking's epoch, no further
    assert sum(r["status"] in ("winner", "survivor") for r in report["candidates"]) == 2


def test_never_fewer_survivors_than_asked(synthetic_dir, tmp_path, no_test_split):
    # halving 8 keeps 4, two are inserted: 6 < 7, so that ranking already decides the 7
    report = search(tmp_path, synthetic_dir, n=8, survivors=7).run()
    assert sum(r["status"] in ("winner", "survivor") for r in report["candidates"]) == 7
    assert [k for k in report["budget"] if k.startswith("round")] == ["round 0"]


def test_compute_is_what_every_epoch_and_spectrum_cost(synthetic_dir, tmp_path, no_test_split):
    report = search(tmp_path, synthetic_dir, n=8, survivors=2).run()
    budget = report["budget"]
    phases = [b for b in budget.values() if isinstance(b, dict)]
    epochs = sum(b["epochs"] for b in phases)
    spectra = sum(b["ls_seconds"] for b in phases) / LS_SECONDS
    assert report["compute_seconds"] == pytest.approx(epochs * TRAIN_SECONDS + spectra * LS_SECONDS)
    # the reference and each round's candidates are measured at epochs 0..E: 5 reference spectra, and
    # one per candidate per epoch it was ranked at (plus its initial one)
    assert budget["reference"]["ls_seconds"] == pytest.approx(5 * LS_SECONDS)


def test_a_cached_reference_is_charged_like_a_trained_one(synthetic_dir, tmp_path, no_test_split):
    first = search(tmp_path, synthetic_dir, "first", n=8, survivors=2).run()
    second = search(tmp_path, synthetic_dir, "second", n=8, survivors=2).run()
    assert second["budget"]["reference"]["epochs"] == first["budget"]["reference"]["epochs"] == 4
    assert second["compute_seconds"] == pytest.approx(first["compute_seconds"])
    assert "reused_seconds" not in first["budget"]["reference"]
    assert second["budget"]["reference"]["reused_seconds"] == pytest.approx(4 * TRAIN_SECONDS + 5 * LS_SECONDS)


def test_a_killed_search_charges_what_it_trained_before_the_kill(synthetic_dir, tmp_path, no_test_split):
    straight = search(tmp_path / "one", synthetic_dir, n=8, survivors=2).run()  # each with its own reference
    with pytest.raises(Killed):  # round 1 trained and ranked, its state not saved
        search(tmp_path / "two", synthetic_dir, n=8, survivors=2, reporter=KillAt("round 1: kept")).run()
    resumed = Search.resume(tmp_path / "two" / "s", executor=FakeExecutor()).run()
    assert resumed["winner"] == straight["winner"]
    assert {k: v for k, v in resumed["budget"].items() if k != "overhead_seconds"} == \
        {k: v for k, v in straight["budget"].items() if k != "overhead_seconds"}
    assert resumed["compute_seconds"] == pytest.approx(straight["compute_seconds"])
    assert resumed["time_to_target"] == straight["time_to_target"]


def test_time_to_target_points_fall_at_the_epoch_that_reached_them(synthetic_dir, tmp_path, no_test_split):
    report = search(tmp_path, synthetic_dir, n=3, survivors=1, strategy="full", epochs=4).run()
    curve = report["time_to_target"]
    # the first candidate trains four epochs in one job, improving every epoch: a point per epoch,
    # at 1, 2, 3, 4 seconds, not all four at the job's end
    assert [seconds for seconds, _ in curve[:4]] == [1.0, 2.0, 3.0, 4.0]
    assert all(later[1] < earlier[1] for earlier, later in zip(curve, curve[1:]))


def test_a_failure_stored_before_a_kill_stays_failed_after_the_resume(synthetic_dir, tmp_path, no_test_split):
    victim = "r0-03"
    expected = search(tmp_path, synthetic_dir, "expected", n=8, survivors=2, executor=FakeExecutor(fail=(victim,))).run()
    with pytest.raises(Killed):  # round 0 trained (the victim failed, stored at once) and ranked; state not saved
        search(tmp_path, synthetic_dir, "killed", n=8, survivors=2, executor=FakeExecutor(fail=(victim,)),
               reporter=KillAt("round 0: kept")).run()
    again = FakeExecutor()  # this time the victim would train fine
    resumed = Search.resume(tmp_path / "killed", executor=again).run()
    rows = {r["name"]: r for r in resumed["candidates"]}
    assert rows[victim]["status"] == "failed" and victim not in {job.name for job in again.jobs}
    assert {n: r["status"] for n, r in rows.items()} == {r["name"]: r["status"] for r in expected["candidates"]}
    assert resumed["winner"] == expected["winner"]


def test_a_spectrum_that_blew_up_fails_its_candidate(synthetic_dir, tmp_path, monkeypatch):
    import torch

    import sparsernn.dynamics
    from sparsernn.sparsity import resolve_method
    from sparsernn.dynamics.lyapunov import Spectrum

    real = sparsernn.dynamics.lyapunov_spectrum

    def exploding(*args, **kwargs):
        spectrum = real(*args, **kwargs)
        return Spectrum(**{**spectrum.__dict__, "exponents": torch.full_like(spectrum.exponents, float("nan"))})

    monkeypatch.setattr(sparsernn.dynamics, "lyapunov_spectrum", exploding)
    config = resolve_method(base_config(synthetic_dir, epochs=2))
    progress = advance(Job("c", config.to_dict(), str(tmp_path / "c"), 1, LSOptions(k=4, samples=2, steps=10)))
    assert progress.failed and "NaN or +inf" in progress.failed and "epoch 0" in progress.failed


def test_a_space_with_nothing_to_sample_is_refused_unless_a_grid(synthetic_dir, tmp_path):
    fixed = SearchSpace.model_validate({"density": 0.4, "fixed": {"method": "set"}})
    with pytest.raises(ConfigError, match="nothing to sample for --sampler tpe"):
        Search(tmp_path / "a", fixed, base_config(synthetic_dir), SearchSettings(sampler="tpe"))
    Search(tmp_path / "b", fixed, base_config(synthetic_dir), SearchSettings(sampler="grid"))  # one point


def dies_for_bad(job: Job) -> Progress:
    """A worker's work that kills its process for the job named "bad" (a segfault, an OOM kill)."""
    if job.name == "bad":
        os._exit(1)
    return Progress(job.name, epoch=job.to_epoch)


class DyingPool(LocalExecutor):
    work = staticmethod(dies_for_bad)


def test_a_worker_that_dies_fails_its_job_only(tmp_path):
    executor = DyingPool(2)
    try:
        jobs = [Job(name, {}, str(tmp_path / name), 3, None) for name in ("a", "bad", "c")]
        results = executor.run(jobs)
        assert [p.name for p in results] == ["a", "bad", "c"]
        assert results[1].failed and "worker process died" in results[1].failed
        assert results[0].failed is None and results[2].failed is None and results[2].epoch == 3
        assert executor.run([Job("d", {}, str(tmp_path / "d"), 1, None), Job("e", {}, str(tmp_path / "e"), 1, None)])
    finally:
        executor.close()


def test_jobs_on_one_run_directory_wait_for_each_other(tmp_path, monkeypatch):
    import threading

    from sparsernn.search import executor as executor_module
    from sparsernn.search.executor import _run_lock

    entered = threading.Event()

    def work(job):  # stands for the training: it must not start while another job holds the run
        entered.set()
        return Progress(job.name, epoch=job.to_epoch)

    monkeypatch.setattr(executor_module, "_advance", work)
    job = Job("reference", {}, str(tmp_path / "ref"), 1, None)
    finished: list[Progress] = []
    with _run_lock(tmp_path / "ref"):  # another search is training this run
        worker = threading.Thread(target=lambda: finished.append(advance(job)))
        worker.start()
        assert not entered.wait(1.0)
    worker.join(30)
    assert entered.is_set() and finished and finished[0].epoch == 1


def test_a_shared_database_keeps_two_searches_of_one_directory_name_apart(synthetic_dir, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    space, base = SearchSpace.model_validate(SPACE), base_config(synthetic_dir)
    Search(tmp_path / "a" / "exp", space, base, SearchSettings(), storage=storage, executor=FakeExecutor())
    with pytest.raises(ConfigError, match="belongs to another search directory named 'exp'"):
        Search(tmp_path / "b" / "exp", space, base, SearchSettings(), storage=storage)
    with pytest.raises(ConfigError, match="belongs to another search directory"):
        Search.resume(tmp_path / "b" / "exp", storage=storage)
    # the search itself, reached by another path to the same directory, is its own
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert Search.resume(tmp_path / "link" / "exp", storage=storage).settings == SearchSettings()
