"""One fixed small search with 1 and 2 workers, on the local executor and on Ray, side by side in one
run on this machine: the wall-time speed-up of a second worker (target: at least 1.6x on 2 cores) and
the Ray executor's overhead per task.

    python benchmarks/lsh_parallel.py --data-dir ../shared/data/ptb
    python benchmarks/lsh_parallel.py --report-only

The search: the demo space (configs/search/demo.yaml), the hyperprune-demo model (2x64 LSTM) on PTB
with epochs of 20k tokens, 3 epochs, n = 8, 2 survivors, TPE, spectra k = 16 over 4 windows of 50
steps. Every worker has one torch thread (the 1-worker local search too), so the comparison is of
workers, not of threads. Each configuration starts from nothing (its own search and dense reference
directories); Ray's start-up is timed apart from the search. Overhead per task: (Ray wall - local wall)
/ tasks, at the same worker count.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, ptb_dir, study_parser, write_result  # noqa: E402

import torch  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.search import Search, SearchSettings, load_space  # noqa: E402
from sparsernn.search.executor import LocalExecutor  # noqa: E402

NAME = "lsh_parallel"
TARGET = 1.6
SETTINGS = {"n": 8, "survivors": 2, "sampler": "tpe", "k": 16, "samples": 4, "steps": 50, "seed": 0}


class CountingExecutor:
    """Counts the jobs the search hands its executor."""

    def __init__(self, inner) -> None:
        self.inner, self.tasks = inner, 0

    def run(self, jobs):
        self.tasks += len(jobs)
        return self.inner.run(jobs)

    def close(self) -> None:  # the search ends the local executor's worker processes with it
        if hasattr(self.inner, "close"):
            self.inner.close()


def run_search(out: Path, corpus_dir: Path, executor) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    base = resolve_config("hyperprune-demo", overrides={"data.dir": str(corpus_dir.resolve()), "train.epochs": 3,
                                                        "data.epoch_tokens": 20000, "train.device": "cpu"})
    search = Search(out / "search", load_space("demo"), base, SearchSettings(**SETTINGS),
                    reference_dir=out / "references", executor=executor)
    started = time.perf_counter()
    report = search.run()
    return time.perf_counter() - started, report


def report(result: dict) -> None:
    print(result["scale"])
    print(f"{'executor':10s} {'workers':>7s} {'tasks':>5s} {'wall s':>8s} {'start-up s':>10s} {'winner':>7s}")
    for u in result["runs"]:
        print(f"{u['executor']:10s} {u['workers']:7d} {u['tasks']:5d} {u['wall_seconds']:8.1f} "
              f"{u.get('startup_seconds', 0.0):10.1f} {u['winner']:>7s}")
    for name, speedup in result["speedup"].items():
        print(f"{name}: 2 workers {speedup:.2f}x faster than 1 (target >= {TARGET}x: "
              f"{'PASS' if speedup >= TARGET else 'FAIL'})")
    for workers, seconds in result["ray_overhead_per_task_seconds"].items():
        print(f"Ray overhead per task at {workers} worker(s): {seconds:.2f} s")


def main() -> None:
    parser = study_parser(__doc__, out="runs/bench-parallel")
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    corpus_dir = ptb_dir(args.data_dir, "lsh_parallel.py")
    torch.set_num_threads(1)
    import ray

    from sparsernn.search.cluster import RayExecutor

    runs = []
    for workers in (1, 2):
        executor = CountingExecutor(LocalExecutor(workers))
        wall, rep = run_search(Path(args.out) / f"local-{workers}", corpus_dir, executor)
        runs.append({"executor": "local", "workers": workers, "tasks": executor.tasks, "wall_seconds": wall,
                     "winner": rep["winner"], "compute_seconds": rep["compute_seconds"]})
        print(runs[-1], flush=True)
        started = time.perf_counter()
        ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level="ERROR")  # a new instance
        inner = RayExecutor(cpus=1)
        startup = time.perf_counter() - started
        executor = CountingExecutor(inner)
        wall, rep = run_search(Path(args.out) / f"ray-{workers}", corpus_dir, executor)
        ray.shutdown()
        runs.append({"executor": "ray", "workers": workers, "tasks": executor.tasks, "wall_seconds": wall,
                     "startup_seconds": startup, "winner": rep["winner"], "compute_seconds": rep["compute_seconds"],
                     "dispatch_seconds": inner.dispatch_seconds})
        print(runs[-1], flush=True)
    wall = {(u["executor"], u["workers"]): u["wall_seconds"] for u in runs}
    tasks = {(u["executor"], u["workers"]): u["tasks"] for u in runs}
    result = {
        "command": command_line(),
        "scale": "demo space, 2x64 LSTM on PTB, 3 epochs of 20k tokens, n 8, 2 survivors, TPE, spectra k 16 "
                 "(4 x 50 steps); one torch thread per worker",
        "runs": runs,
        "speedup": {name: wall[(name, 1)] / wall[(name, 2)] for name in ("local", "ray")},
        "ray_overhead_per_task_seconds": {str(w): (wall[("ray", w)] - wall[("local", w)]) / tasks[("ray", w)]
                                          for w in (1, 2)},
        "same_winner": len({u["winner"] for u in runs}) == 1,
    }
    print(f"results: {write_result(NAME, result)}")
    report(result)


if __name__ == "__main__":
    main()
