"""Does the LS distance after e0 epochs predict a candidate's final validation perplexity?

For candidates from the hyperpruning paper's space (``configs/search/paper.yaml``: Selfish-RNN's
modes, 24 grid points, density 0.33, death rate 0.8), each trained to the end of a CPU-scaled
schedule, the Spearman rank correlation (with a bootstrap 95% interval) between the final (best)
validation perplexity and, after e0 epochs,

  (a) the LS distance to the dense reference, for each distance (pca2, raw), each state (hc, h) and
      k in {64, all};
  (b) the validation loss.

A positive correlation means "nearer the reference (or lower loss) early -> better in the end".

Runs in pieces: each finished candidate is appended to results/lsh_predictiveness.json and skipped
on the next start; the runs themselves resume from their checkpoints.

    python benchmarks/lsh_predictiveness.py --data-dir ../shared/data/ptb   # the committed run's scale
    python benchmarks/lsh_predictiveness.py --report-only
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, command_line, parse_study, spearman_with_interval, study_parser, write_result  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.data import resolve_lm_dir  # noqa: E402
from sparsernn.search.executor import Job, LSOptions, advance  # noqa: E402
from sparsernn.search.ls_space import ls_distances  # noqa: E402
from sparsernn.search.space import load_space  # noqa: E402
from sparsernn.sparsity import resolve_method  # noqa: E402

NAME = "lsh_predictiveness"
OPTIONS = [(d, s, k) for d in ("pca2", "raw") for s in ("hc", "h") for k in (64, None)]


def analyse(result: dict) -> dict:
    e0 = result["schedule"]["e0"]
    rows = result["candidates"]
    final = [r["final_val_ppl"] for r in rows]
    table = []
    for distance, state, k in OPTIONS:
        spectra = {r["name"]: {int(e): v for e, v in r["spectra"][state].items()} for r in rows}
        ref = {int(e): v for e, v in result["reference"]["spectra"][state].items()}
        scores, _ = ls_distances(ref, spectra, e0, distance, k)
        rho, low, high = spearman_with_interval([scores[r["name"]] for r in rows], final)
        table.append({"signal": f"LS {distance}, {state}, k={'all' if k is None else k}", "spearman": rho,
                      "low": low, "high": high})
    rho, low, high = spearman_with_interval([r["val_loss_e0"] for r in rows], final)
    table.append({"signal": f"validation loss after epoch {e0}", "spearman": rho, "low": low, "high": high})
    best_ls = max((t for t in table if t["signal"].startswith("LS")), key=lambda t: t["spearman"])
    return {"table": table, "best_ls": best_ls["signal"],
            "ls_beats_loss": best_ls["spearman"] > table[-1]["spearman"],
            "ls_beats_loss_clearly": best_ls["low"] > table[-1]["high"]}


def report(result: dict) -> None:
    s = result["schedule"]
    print(f"{len(result['candidates'])} candidates of the paper's space; model {s['model']}, {s['epochs']} epochs of "
          f"{s['epoch_tokens']} tokens; signals after epoch {s['e0']}; spectra K={s['samples']}, T={s['steps']}")
    for r in sorted(result["candidates"], key=lambda r: r["final_val_ppl"]):
        print(f"  {r['name']:34s} final val ppl {r['final_val_ppl']:8.2f}  val loss@e0 {r['val_loss_e0']:.4f}")
    if len(result["candidates"]) >= 4:
        analysis = analyse(result)
        print(f"{'signal (after e0) vs final val ppl':40s} {'Spearman':>9s}  95% bootstrap interval")
        for t in analysis["table"]:
            print(f"{t['signal']:40s} {t['spearman']:9.3f}  [{t['low']:.3f}, {t['high']:.3f}]")
        print(f"best LS option: {analysis['best_ls']}; LS beats loss: {analysis['ls_beats_loss']} "
              f"(clearly, intervals apart: {analysis['ls_beats_loss_clearly']})")


def main() -> None:
    parser = study_parser(__doc__, out="runs/lsh_predictiveness")
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--epoch-tokens", type=int, default=80_000)
    parser.add_argument("--e0", type=int, default=2)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    corpus_dir, note = resolve_lm_dir(args.data_dir)
    if note:
        sys.exit(f"lsh_predictiveness.py needs PTB: {note}")
    base = resolve_config("ptb-small", overrides={"train.epochs": args.epochs, "data.epoch_tokens": args.epoch_tokens,
                                                  "data.dir": str(corpus_dir.resolve()), "train.log_interval": 10**9,
                                                  "optim.decay_start_epoch": args.epochs // 2})
    space = load_space("paper")
    points = space.grid()
    random.Random(0).shuffle(points)  # a fixed random subset of the grid
    points = points[: args.candidates]
    ls = LSOptions(k=None, states=("hc", "h"), samples=args.samples, steps=args.steps, qr_every=1)
    path = RESULTS / f"{NAME}.json"
    result = json.loads(path.read_text()) if path.is_file() else {
        "command": command_line(),
        "schedule": {"model": "ptb-small 2x200 LSTM", "epochs": args.epochs, "epoch_tokens": args.epoch_tokens,
                     "e0": args.e0, "samples": args.samples, "steps": args.steps, "density": space.density},
        "candidates": []}
    out = Path(args.out)
    if "reference" not in result:
        dense = base.model_copy(deep=True)
        started = time.perf_counter()
        progress = advance(Job("reference", resolve_method(dense).to_dict(), str(out / "reference"), args.e0, ls))
        if progress.failed:
            sys.exit(f"reference failed: {progress.failed}")
        result["reference"] = {"spectra": progress.spectra, "val_loss_e0": progress.val_loss[args.e0],
                               "seconds": time.perf_counter() - started}
        write_result(NAME, {k: v for k, v in result.items() if k not in ("benchmark", "date", "machine")})
    done = {r["name"] for r in result["candidates"]}
    for params in points:
        name = "-".join(f"{k.removeprefix('sparsity.')}={v}" for k, v in params.items())
        if name in done:
            continue
        config = space.candidate_config(base, params).to_dict()
        started = time.perf_counter()
        early = advance(Job(name, config, str(out / name), args.e0, ls))
        final = advance(Job(name, config, str(out / name), args.epochs, None))
        if early.failed or final.failed:
            print(f"{name}: failed ({early.failed or final.failed})")
            continue
        result["candidates"].append({
            "name": name, "params": params, "spectra": early.spectra, "val_loss_e0": early.val_loss[args.e0],
            "val_ppl": final.val_metric, "final_val_ppl": min(final.val_metric.values()),
            "seconds": time.perf_counter() - started})
        print(f"{name}: final val ppl {result['candidates'][-1]['final_val_ppl']:.2f} "
              f"({len(result['candidates'])}/{len(points)})", flush=True)
        if len(result["candidates"]) >= 4:
            result["analysis"] = analyse(result)
        write_result(NAME, {k: v for k, v in result.items() if k not in ("benchmark", "date", "machine")})
    report(result)


if __name__ == "__main__":
    main()
