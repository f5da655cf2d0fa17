"""Validation/test perplexity of every sparse-training method at density 0.33 on ptb-small, next to dense.

    python benchmarks/sparse_methods.py [--data-dir DIR] [--epochs 3] [--epoch-tokens 250000] [--out runs/methods]
    python benchmarks/sparse_methods.py --report-only    # print the stored result again, no training

The schedule is shortened alike for all methods (CPU budget): ``--epochs`` epochs of
``--epoch-tokens`` training tokens each (successive slices of PTB train), lr 20 halved each epoch after
the second; GMP reaches its density at the end of the second-to-last epoch; all else is ptb-small. Each method runs in its own run directory and is skipped when its
results.json exists, so an interrupted benchmark resumes where it stopped. Writes
results/sparse_methods.json and prints the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, read_result, study_parser, train_run, write_result  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.sparsity import resolve_method  # noqa: E402
from sparsernn.data import load_corpus, resolve_lm_dir  # noqa: E402

METHODS = ["dense", "static", "set", "rigl", "snfs", "dsr", "selfish", "gmp"]


MODES = ("init", "death", "growth", "redistribution", "update_every")


def report(result: dict) -> None:
    """Print every figure of a sparse_methods result: each method's modes, non-zeros and perplexities."""
    schedule = result["schedule"]
    print(f"schedule: {schedule['epochs']} epochs of {schedule['epoch_tokens']} tokens, lr {schedule['lr']}")
    print(f"{'method':8s} " + " ".join(f"{m:>16s}" for m in MODES)
          + f" {'density':>8s} {'non-zero':>10s} {'valid ppl':>10s} {'test ppl':>9s}")
    for row in result["methods"]:
        modes = row["config"]["sparsity"]
        print(f"{row['method']:8s} " + " ".join(f"{str(modes[m]) if modes[m] is not None else '-':>16s}" for m in MODES)
              + f" {row['density']:8.3f} {row['nonzero_prunable']:10,d} {row['val_ppl']:10.2f} {row['test_ppl']:9.2f}")


def main() -> None:
    parser = study_parser(__doc__, out="runs/methods")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epoch-tokens", type=int, default=250_000)
    parser.add_argument("--density", type=float, default=0.33)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parse_study(parser, "sparse_methods", report)
    if args is None:
        return

    corpus_dir, note = resolve_lm_dir(args.data_dir)
    if note:
        sys.exit(f"sparse_methods.py needs PTB: {note}")
    corpus = load_corpus(corpus_dir)
    rows = []
    for method in args.methods.split(","):
        overrides = {
            "train.epochs": args.epochs, "data.epoch_tokens": args.epoch_tokens, "optim.decay_start_epoch": 2,
            "train.checkpoint_every": 500, "train.log_interval": 250, "data.dir": str(corpus_dir.resolve()),
            "sparsity.method": method, "sparsity.density": 1.0 if method == "dense" else args.density,
        }
        if method == "gmp":  # reach the target one epoch before the end, leaving an epoch to recover
            overrides["sparsity.end_epoch"] = max(1, args.epochs - 1)
        if method == "selfish":  # Selfish-RNN trains with SNT-ASGD
            overrides["optim.name"] = "nt_asgd"
        config = resolve_method(resolve_config("ptb-small", overrides=overrides))  # recorded as it ran
        result, history = train_run(config, corpus, Path(args.out) / method)
        rows.append({"method": method, "config": config.to_dict(), "val_ppl": result["val_ppl"],
                     "test_ppl": result["test_ppl"], "density": result["density"],
                     "nonzero_prunable": result["nonzero_prunable"], "best_epoch": result["best_epoch"],
                     "train_seconds": result["train_seconds"], "epochs": history})
    path = write_result("sparse_methods", {
        "command": command_line(),
        "schedule": {"epochs": args.epochs, "epoch_tokens": args.epoch_tokens, "lr": "20, halved after epoch 2"},
        "methods": rows,
    })
    print()
    report(read_result("sparse_methods"))
    print(path)


if __name__ == "__main__":
    main()
