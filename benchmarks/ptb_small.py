"""Full ptb-small run (Zaremba et al. 2014 small: 2x200 LSTM, 13 epochs); acceptance: test ppl <= 120.

    python benchmarks/ptb_small.py [--data-dir DIR] [--out runs/bench-ptb-small] [--epochs 13]
    python benchmarks/ptb_small.py --report-only    # print the stored result again, no training

Resumable: rerun the same command after an interruption. Writes benchmarks/results/ptb_small.json
(config, per-epoch metrics, final valid/test perplexity) and prints the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_study, read_result, study_parser, train_run, write_result  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.data import load_corpus, resolve_lm_dir  # noqa: E402

PAPER_VALID_PPL = 120.7  # Zaremba et al. (2014), Table 1, non-regularized LSTM
PAPER_TEST_PPL = 114.5
TARGET_TEST_PPL = 120.0


def report(result: dict) -> None:
    """Print every figure of a ptb_small result: the per-epoch table, then the final one."""
    print(f"{'epoch':>5s} {'lr':>10s} {'train ppl':>10s} {'valid ppl':>10s}")
    for e in result["epochs"]:
        print(f"{e['epoch']:5d} {e['lr']:10g} {e['train_ppl']:10.2f} {e['val_ppl']:10.2f}")
    final = result["final"]
    print(f"ptb-small: best epoch {final['best_epoch']} of {len(result['epochs'])}, valid ppl {final['val_ppl']:.2f}, "
          f"test ppl {final['test_ppl']:.2f} (paper {result['paper_val_ppl']} / {result['paper_test_ppl']}, "
          f"target test <= {result['target_test_ppl']}: {'PASS' if result['passed'] else 'FAIL'})")


def main() -> None:
    parser = study_parser(__doc__, out="runs/bench-ptb-small")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's 13")
    args = parse_study(parser, "ptb_small", report)
    if args is None:
        return

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
        "paper_val_ppl": PAPER_VALID_PPL,
        "paper_test_ppl": PAPER_TEST_PPL,
        "target_test_ppl": TARGET_TEST_PPL,
        "passed": passed,
    })
    report(read_result("ptb_small"))
    print(path)


if __name__ == "__main__":
    main()
