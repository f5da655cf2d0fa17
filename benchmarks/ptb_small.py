"""Full ptb-small run (Zaremba et al. 2014 small: 2x200 LSTM, 13 epochs); acceptance: test ppl <= 120.

    python benchmarks/ptb_small.py [--data-dir DIR] [--out runs/bench-ptb-small] [--epochs 13]

Resumable: rerun the same command after an interruption. Writes benchmarks/results/ptb_small.json
(config, per-epoch metrics, final valid/test perplexity) and prints the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import train_run, write_result  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.data import load_corpus, resolve_lm_dir  # noqa: E402

PAPER_TEST_PPL = 114.5
TARGET_TEST_PPL = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/bench-ptb-small")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's 13")
    args = parser.parse_args()

    overrides = {"train.checkpoint_every": 500, "train.log_interval": 200}
    if args.epochs:
        overrides["train.epochs"] = args.epochs
    config = resolve_config("ptb-small", overrides=overrides)
    corpus_dir, note = resolve_lm_dir(args.data_dir)
    if note:
        sys.exit(f"ptb_small.py needs the real PTB corpus: {note}")
    config.data.dir = str(corpus_dir.resolve())
    final, history = train_run(config, load_corpus(corpus_dir), Path(args.out))
    passed = final["test_ppl"] <= TARGET_TEST_PPL
    path = write_result("ptb_small", {
        "command": "python benchmarks/ptb_small.py",
        "config": config.to_dict(),
        "epochs": history,
        "final": final,
        "paper_test_ppl": PAPER_TEST_PPL,
        "target_test_ppl": TARGET_TEST_PPL,
        "passed": passed,
    })
    print(f"ptb-small: best epoch {final['best_epoch']}, valid ppl {final['val_ppl']:.2f}, "
          f"test ppl {final['test_ppl']:.2f} (paper {PAPER_TEST_PPL}, target <= {TARGET_TEST_PPL}: "
          f"{'PASS' if passed else 'FAIL'}); {path}")


if __name__ == "__main__":
    main()
