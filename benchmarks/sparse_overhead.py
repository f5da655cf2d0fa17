"""Cost of sparse training: step time and peak memory of ptb-small at density 0.33 vs dense.

    python benchmarks/sparse_overhead.py [--data-dir DIR] [--steps 300] [--rounds 3]
    python benchmarks/sparse_overhead.py --report-only    # print the stored result again, no timing

Time: dense, rigl, selfish and gmp each train ``--steps`` steps per "epoch" (a capped epoch whose
end runs the epoch-end hook), interleaved round by round in one process (the order rotating each round); the figure is
the median over rounds of each method's epoch time over dense's in the same round. Each timed epoch includes prune/regrow work: RigL
updates every 100 steps, Selfish-RNN prunes and regrows at the epoch end, GMP prunes every 100 steps
(its schedule spans 10 such epochs, so every timed epoch prunes). Acceptance: overhead <= 15%.

Memory: each method runs the same work in a fresh subprocess; the figure is the growth of the peak
resident set size over the process's size just before the model is built (data already loaded),
relative to dense (Linux VmHWM after resetting it through /proc/self/clear_refs). Acceptance: <= 1.25x dense. Writes results/sparse_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, read_result, study_parser, write_result  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.data import Corpus, Vocabulary, load_corpus, resolve_lm_dir  # noqa: E402
from sparsernn.train import Trainer  # noqa: E402

METHODS = ["dense", "rigl", "selfish", "gmp"]
TARGET_OVERHEAD = 0.15
TARGET_MEMORY = 1.25


def report(result: dict) -> None:
    """Print every figure of a sparse_overhead result."""
    times = result["seconds_per_epoch"]
    print(f"{result['steps_per_epoch']} steps per epoch, {result['rounds']} rounds; seconds per epoch by round:")
    for m, seconds in times.items():
        print(f"  {m:8s} " + "  ".join(f"{t:.2f}s" for t in seconds))
    print(f"{'method':8s} {'s/epoch':>8s} {'overhead':>9s} {'peak MiB':>9s} {'x dense':>8s} {'updates':>8s} {'density':>8s}")
    for m in times:
        updates = result["mask_updates"][m]
        print(f"{m:8s} {statistics.median(times[m]):8.2f} {result['overhead'][m]:+9.1%} "
              f"{result['memory'][m]['peak_mib']:9.1f} {result['memory_ratio'][m]:8.2f} "
              f"{'-' if updates is None else updates:>8} {result['final_density'][m]:8.2f}")
    print(f"{'PASS' if result['passed'] else 'FAIL'} (overhead <= {result['target_overhead']:.0%}, "
          f"memory <= {result['target_memory_ratio']}x)")


def make_trainer(method: str, corpus: Corpus, steps: int, device: str) -> Trainer:
    overrides = {"data.epoch_tokens": steps * 20 * 20, "train.epochs": 10, "train.log_interval": 10**9,
                 "train.device": device, "sparsity.method": method,
                 "sparsity.density": 1.0 if method == "dense" else 0.33}
    if method == "gmp":
        overrides.update({"sparsity.start_epoch": 1, "sparsity.end_epoch": 10})
    if method == "selfish":  # Selfish-RNN trains with SNT-ASGD
        overrides["optim.name"] = "nt_asgd"
    return Trainer(resolve_config("ptb-small", overrides=overrides), corpus)


def run_epoch(trainer: Trainer) -> float:
    """One capped training epoch plus the epoch-end hook, timed."""
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train_epoch()
    trainer.sparsifier.end_epoch(trainer.epoch, {})
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    trainer.advance_epoch()
    return elapsed


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux: clear_refs 5); returns the RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    return _status_mib("VmHWM")


def memory_child(method: str, corpus_file: str, steps: int, device: str) -> None:
    tensors = load_file(corpus_file)
    vocab = Vocabulary(tuple(json.loads(Path(corpus_file).with_suffix(".json").read_text())))
    corpus = Corpus(Path(corpus_file).parent, vocab, tensors["train"], tensors["valid"], tensors["test"])
    before = reset_peak_rss()
    trainer = make_trainer(method, corpus, steps, device)
    run_epoch(trainer)
    if trainer.device.type == "cuda":
        print(json.dumps({"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "kind": "cuda allocated"}))
    else:
        print(json.dumps({"peak_mib": peak_rss_mib() - before, "kind": "rss growth"}))


def main() -> None:
    parser = study_parser(__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory-child", nargs=2, metavar=("METHOD", "CORPUS"), help=argparse.SUPPRESS)
    args = parse_study(parser, "sparse_overhead", report)
    if args is None:
        return
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], args.steps, args.device)
        return

    corpus_dir, note = resolve_lm_dir(args.data_dir)
    if note:
        sys.exit(f"sparse_overhead.py measures ptb-small on PTB: {note}")
    corpus = load_corpus(corpus_dir)
    trainers = {m: make_trainer(m, corpus, args.steps, args.device) for m in METHODS}
    for trainer in trainers.values():  # warm-up epoch each
        run_epoch(trainer)
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for round_ in range(args.rounds):
        order = METHODS[round_ % len(METHODS):] + METHODS[:round_ % len(METHODS)]  # rotate: no method always first
        for method in order:
            times[method].append(run_epoch(trainers[method]))
        print(f"round {round_ + 1}: " + "  ".join(f"{m} {times[m][-1]:.2f}s" for m in METHODS), flush=True)
    updates = {m: getattr(t.sparsifier, "updates", None) for m, t in trainers.items()}
    densities = {m: (t.sparsifier.masking.density() if hasattr(t.sparsifier, "masking") else 1.0)
                 for m, t in trainers.items()}
    overhead = {m: statistics.median(t / d for t, d in zip(times[m], times["dense"])) - 1.0 for m in METHODS}
    del trainers

    memory = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus_file = Path(tmp) / "corpus.safetensors"
        save_file({"train": corpus.train, "valid": corpus.valid, "test": corpus.test}, corpus_file)
        corpus_file.with_suffix(".json").write_text(json.dumps(list(corpus.vocab.words)))
        for method in METHODS:
            out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--device", args.device,
                                  "--memory-child", method, str(corpus_file)],
                                 capture_output=True, text=True, check=True)
            memory[method] = json.loads(out.stdout.strip().splitlines()[-1])
    memory_ratio = {m: memory[m]["peak_mib"] / memory["dense"]["peak_mib"] for m in METHODS}

    passed = all(overhead[m] <= TARGET_OVERHEAD for m in METHODS) and all(
        memory_ratio[m] <= TARGET_MEMORY for m in METHODS)
    path = write_result("sparse_overhead", {
        "command": command_line(),
        "steps_per_epoch": args.steps, "rounds": args.rounds, "seconds_per_epoch": times,
        "overhead": overhead, "mask_updates": updates, "final_density": densities,
        "memory": memory, "memory_ratio": memory_ratio,
        "target_overhead": TARGET_OVERHEAD, "target_memory_ratio": TARGET_MEMORY, "passed": passed,
    })
    print()
    report(read_result("sparse_overhead"))
    print(path)


if __name__ == "__main__":
    main()
