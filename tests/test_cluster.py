"""Hyperpruning beyond one machine: the driver's lease, candidates as Ray tasks on a local cluster (head
plus two worker processes), a worker killed mid-candidate, and the search on a real PostgreSQL server
(started on loopback when its binaries are here; skipped, saying so, when they are not)."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from sparsernn.runs import LAST
from sparsernn.search import Search, SearchSettings
from sparsernn.search.executor import LocalExecutor, read_attempts
from sparsernn.search.lease import Lease, SearchLocked
from sparsernn.search.space import SearchSpace

from conftest import cli_in_process
from test_search import FAST, SPACE, base_config

SETTINGS = {**FAST, "n": 4, "survivors": 1}
COMPARED = ("name", "params", "status", "epoch", "scores", "val_ppl")


def tiny_search(out: Path, corpus_dir: Path, executor=None, storage=None) -> Search:
    return Search(out, SearchSpace.model_validate(SPACE), base_config(corpus_dir, epochs=3), SearchSettings(**SETTINGS),
                  storage=storage, reference_dir=out.parent / "references", executor=executor)


def choices(report: dict) -> tuple:
    return report["winner"], [{k: r[k] for k in COMPARED} for r in report["candidates"]]


@pytest.fixture(scope="module")
def local_report(synthetic_dir, tmp_path_factory):
    return tiny_search(tmp_path_factory.mktemp("local") / "search", synthetic_dir, LocalExecutor(1)).run()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lease_refuses_a_live_driver_and_frees_a_dead_or_silent_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    first = Lease(url, "hyperprune", ttl=60, where="runs/s")
    first.acquire()
    second = Lease(url, "hyperprune", ttl=60, where="runs/s")
    with pytest.raises(SearchLocked, match=r"runs/s: another driver runs this search \(process \d+ on "):
        second.acquire()
    table = first.table
    with first.engine.begin() as conn:  # the holder died on this machine: free at once
        conn.execute(table.update().values(pid=dead_pid()))
    second.acquire()
    assert not first.renew() and first.lost  # the old holder learns it lost the lease
    with second.engine.begin() as conn:  # a holder elsewhere that stopped beating: free after ttl
        conn.execute(table.update().values(host="elsewhere", heartbeat=time.time() - 61))
    third = Lease(url, "hyperprune", ttl=60)
    third.acquire()
    assert third.renew() and not second.renew()
    third.release()
    fourth = Lease(url, "hyperprune", ttl=60)  # released: anyone may take it
    fourth.acquire()
    fourth.release()


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'sparsernn[ray]'")
    from ray.cluster_utils import Cluster

    os.environ["OMP_NUM_THREADS"] = "1"  # workers inherit it: one thread each, like the local run
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):  # two worker processes' worth of CPUs, one candidate each
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="ERROR")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_a_search_on_a_ray_cluster_makes_the_local_choices(ray_cluster, synthetic_dir, tmp_path, local_report):
    from sparsernn.search.cluster import RayExecutor

    executor = RayExecutor(cpus=1)
    report = tiny_search(tmp_path / "search", synthetic_dir, executor).run()
    assert choices(report) == choices(local_report)
    assert executor.submitted >= 8
    hosts = {row["pid"] for name in ("r0-00", "r0-01") for row in read_attempts(tmp_path / "search" / "candidates" / name)}
    assert os.getpid() not in hosts  # trained in the Ray workers, not in this process


@pytest.mark.slow
def test_a_worker_killed_mid_candidate_is_retried_from_its_checkpoint(ray_cluster, synthetic_dir, tmp_path,
                                                                       local_report):
    from sparsernn.search.cluster import RayExecutor

    victim = tmp_path / "search" / "candidates" / "r0-01"
    killed: list[int] = []

    def kill_the_first_worker_training_it() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            started = read_attempts(victim)
            if started:
                os.kill(started[0]["pid"], signal.SIGKILL)  # mid-candidate: it has started epoch 1
                killed.append(started[0]["pid"])
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_the_first_worker_training_it, daemon=True)
    watcher.start()
    report = tiny_search(tmp_path / "search", synthetic_dir, RayExecutor(cpus=1, retries=3)).run()
    watcher.join()
    assert killed, "the worker was never seen starting the candidate"
    attempts = read_attempts(victim, 1)
    assert len(attempts) == 2 and attempts[1]["pid"] != killed[0]  # a new worker continued it
    row = next(r for r in report["candidates"] if r["name"] == "r0-01")
    assert row["retries"] == {"1": 1}  # the candidate's history shows the retry
    assert choices(report) == choices(local_report)  # and nothing it chose changed


# ---- PostgreSQL -------------------------------------------------------------------------------------

def _postgres_binaries() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    return Path(found).resolve().parent if found else None


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server of its own on loopback, for this module; skipped (saying why) without one."""
    bindir = _postgres_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL test skipped: no server binaries (initdb, pg_ctl); on Debian: apt install postgresql")
    pytest.importorskip("psycopg", reason="PostgreSQL test skipped: no driver (pip install 'sparsernn[postgres]')")
    run_as: list[str] = []
    root = tempfile.mkdtemp(prefix="sparsernn-pg-", dir="/tmp")
    if os.geteuid() == 0:  # the server refuses to run as root: as the postgres user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL test skipped: running as root and there is no postgres user to run the server")
        os.chmod(root, 0o755)
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = Path(root) / "data"
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth", "trust"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(Path(root) / "log"), "-w", "-o",
                    f"-h 127.0.0.1 -p {port} -k {root}", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*run_as, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                        "search"], check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/search"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_a_search_on_postgresql_survives_its_driver_and_refuses_a_second(postgres_url, synthetic_dir, tmp_path):
    args = ["hyperprune", "--preset", "tiny", "--data-dir", str(synthetic_dir), "--epochs", "4",
            "--set", "model.hidden_sizes=[16,16]", "--set", "data.epoch_tokens=800", "--set", "data.batch_size=8",
            "--set", "data.eval_batch_size=4", "--set", "data.bptt=10", "--set", "train.device=cpu",
            "--n", "8", "--survivors", "2", "--k", "8", "--samples", "3", "--steps", "20", "--seed", "5",
            "--reference-dir", str(tmp_path / "references")]
    straight = cli_in_process(*args, "--out", tmp_path / "straight")  # the same search on SQLite, uninterrupted
    assert straight.returncode == 0, straight.stderr
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-c", "import torch; torch.set_num_threads(1); from sparsernn.cli import "
                             "main; main()", *args, "--workers", "1", "--out", str(killed), "--storage", postgres_url], env=env,
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "driver.log").open("w"))
    try:
        deadline = time.time() + 240
        while not (killed / "candidates" / "r1-00" / LAST).exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-2000:]
        second = cli_in_process("hyperprune", "--resume", killed, "--storage", postgres_url)
        assert second.returncode != 0 and "another driver runs this search" in second.stderr, second.stderr
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "report.json").exists() and not (killed / "search.db").exists()  # the state is on the server
    resumed = cli_in_process("hyperprune", "--resume", killed, "--storage", postgres_url)
    assert resumed.returncode == 0, resumed.stderr
    ours, theirs = (json.loads((d / "report.json").read_text()) for d in (killed, tmp_path / "straight"))
    assert choices(ours) == choices(theirs) and ours["test"] == theirs["test"]


@pytest.mark.parametrize("options,message", [
    (["--executor", "slurm"], "--executor: Input should be 'local' or 'ray' (got 'slurm')"),
    (["--address", "auto"], "--address: only with --executor ray"),
    (["--retries", "2", "--gpus-per-candidate", "1"], "--gpus-per-candidate, --retries: only with --executor ray"),
    (["--gpus-per-candidate", "-1"], "--gpus-per-candidate: Input should be greater than or equal to 0 (got -1)"),
])
def test_bad_cluster_options_are_one_line(tmp_path, options, message):
    result = cli_in_process("hyperprune", "--out", tmp_path / "s", *options)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_driver_that_lost_its_lease_writes_nothing_more(synthetic_dir, tmp_path):
    from sparsernn.errors import ConfigError

    search = tiny_search(tmp_path / "search", synthetic_dir, LocalExecutor(1))
    search._lease = Lease(search.storage, "hyperprune", ttl=60)
    search._lease.acquire()
    state = search.state
    search._save_state(state)  # holding the lease: writes
    with search._lease.engine.begin() as conn:  # it stalled: another driver took the search over
        conn.execute(search._lease.table.update().values(owner="the other driver"))
    state["round"] = 99
    with pytest.raises(ConfigError, match="another driver took this search over"):
        search._save_state(state)
    assert search.state["round"] == 0


def test_searches_sharing_a_database_are_studies_of_their_own(synthetic_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = tiny_search(tmp_path / "first", synthetic_dir, storage=url)
    second = tiny_search(tmp_path / "second", synthetic_dir, storage=url)  # not "holds a search already"
    assert (first.study_name, second.study_name) == ("hyperprune:first", "hyperprune:second")
    assert Search.resume(tmp_path / "first", storage=url).settings == first.settings
