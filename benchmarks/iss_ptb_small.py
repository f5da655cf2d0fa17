"""Scaled ISS reproduction on CPU: ISS from scratch on ptb-small vs direct design of the learned sizes.

    python benchmarks/iss_ptb_small.py [--lambdas 1e-4,1e-3,3e-3] [--epochs 3] [--epoch-tokens 250000]

For each lambda (per-token mean loss; the ISS paper's values are for the loss summed over bptt steps,
i.e. 20x these): train ptb-small with group Lasso over ISS components (threshold 1e-4), compact it,
then train a dense ptb-small directly at the learned per-layer sizes with the same schedule. The
schedule is shortened alike for all runs: ``--epochs`` epochs of ``--epoch-tokens`` tokens, lr 20
halved each epoch after the second. Each run is skipped when its results.json exists. Writes
results/iss_ptb_small.json and prints whether ISS beat direct design.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, study_parser, train_run, write_result  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.data import load_corpus, resolve_lm_dir  # noqa: E402
from sparsernn.models.stack import multiply_adds  # noqa: E402
from sparsernn.sparsity.iss import compact, removable_units  # noqa: E402
from sparsernn.runs import BEST, load_model  # noqa: E402


def run(config, corpus, directory: Path) -> dict:
    return train_run(config, corpus, directory)[0]


def model_multiply_adds(model) -> int:
    """Per token: the recurrent layers and the decoder (the embedding is a lookup)."""
    return multiply_adds(model.recurrent_stack(), model.decoder.in_features, model.decoder.out_features)


def main() -> None:
    parser = study_parser(__doc__, out="runs/iss", stored=False)
    parser.add_argument("--lambdas", default="1e-4,1e-3,3e-3")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epoch-tokens", type=int, default=250_000)
    args = parser.parse_args()
    corpus_dir, note = resolve_lm_dir(args.data_dir)
    if note:
        sys.exit(f"iss_ptb_small.py needs PTB: {note}")
    corpus = load_corpus(corpus_dir)
    common = {"train.epochs": args.epochs, "data.epoch_tokens": args.epoch_tokens, "optim.decay_start_epoch": 2,
              "train.checkpoint_every": 500, "train.log_interval": 250, "data.dir": str(corpus_dir.resolve())}
    baseline_dir = Path(args.out) / "dense-200-200"
    rows = []
    for lam in (float(v) for v in args.lambdas.split(",")):
        iss_dir = Path(args.out) / f"iss-{lam:g}"
        iss = run(resolve_config("ptb-small", overrides={**common, "sparsity.method": "iss",
                                                         "sparsity.lasso_lambda": lam,
                                                         "sparsity.lasso_update": "subgradient"}), corpus, iss_dir)
        model, *_ = load_model(iss_dir / BEST)
        sizes = [int((~z).sum()) for z in removable_units(model)]
        compacted = compact(model) if min(sizes) > 0 else None
        # nothing removed: the direct design is the dense baseline itself
        direct_dir = baseline_dir if sizes == [200, 200] else Path(args.out) / f"direct-{'-'.join(map(str, sizes))}"
        direct = run(resolve_config("ptb-small", overrides={**common, "model.hidden_sizes": sizes}), corpus,
                     direct_dir) if compacted is not None else None
        rows.append({
            "lambda": lam, "learned_sizes": sizes, "iss_val_ppl": iss["val_ppl"], "iss_test_ppl": iss["test_ppl"],
            "direct_val_ppl": direct["val_ppl"] if direct else None,
            "direct_test_ppl": direct["test_ppl"] if direct else None,
            "mult_add_reduction": model_multiply_adds(model) / model_multiply_adds(compacted) if compacted else None,
            "iss_beats_direct": (iss["test_ppl"] < direct["test_ppl"]) if direct else None,
        })
    baseline = run(resolve_config("ptb-small", overrides=common), corpus, baseline_dir)
    path = write_result("iss_ptb_small", {
        "command": command_line(),
        "schedule": {"epochs": args.epochs, "epoch_tokens": args.epoch_tokens, "lr": "20, halved after epoch 2"},
        "dense": {"val_ppl": baseline["val_ppl"], "test_ppl": baseline["test_ppl"]}, "rows": rows,
    })
    print(f"\ndense 200,200: valid {baseline['val_ppl']:.2f} test {baseline['test_ppl']:.2f}")
    print(f"{'lambda':>8s} {'sizes':>10s} {'ISS test':>9s} {'direct test':>12s} {'mult-add red.':>14s}  verdict")
    for r in rows:
        direct = f"{r['direct_test_ppl']:.2f}" if r["direct_test_ppl"] else "-"
        verdict = "-" if r["iss_beats_direct"] is None else ("ISS better" if r["iss_beats_direct"] else "direct better")
        reduction = f"{r['mult_add_reduction']:.2f}x" if r["mult_add_reduction"] else "-"
        print(f"{r['lambda']:8g} {','.join(map(str, r['learned_sizes'])):>10s} {r['iss_test_ppl']:9.2f} "
              f"{direct:>12s} {reduction:>14s}  {verdict}")
    print(path)


if __name__ == "__main__":
    main()
