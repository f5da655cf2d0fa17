"""LSH against the searches a practitioner would run instead, on one model, schedule and budget.

Every search covers the hyperpruning paper's space (Selfish-RNN's modes, density 0.33, death rate
0.8) for the same model and schedule; sampled searches start from the same n, all use the same e0
and ei. Units, each appended to results/lsh_vs_baselines.json as it finishes (the script skips
what the JSON holds; a unit interrupted midway resumes from its search directory):

  dense, selfish-defaults          the dense model and Selfish-RNN with its defaults, trained to the end
  lsh-tpe, lsh-atpe, lsh-grid      LSH ranked by LS distance (the defaults: pca2, h, k=64)
  loss-tpe, loss-grid              the same rounds ranked by validation loss
  hyperband                        Optuna's Hyperband pruner on validation loss (TPE proposals)
  full-tpe                         full-training search: every initial candidate to the end

For each search: the winner's final test perplexity, the compute seconds spent, and the time each
took to reach the best validation perplexity that every search reached.

    OMP_NUM_THREADS=1 python benchmarks/lsh_vs_baselines.py --data-dir ../shared/data/ptb --n 8

The committed run uses one torch thread, so that the other core of a 2-core machine stays free and
every search is timed under the same load.
    python benchmarks/lsh_vs_baselines.py --report-only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, read_result, write_result  # noqa: E402

from sparsernn.config import resolve_config, validate  # noqa: E402
from sparsernn.data import resolve_lm_dir  # noqa: E402
from sparsernn.search import Search, SearchSettings, load_space  # noqa: E402
from sparsernn.search.executor import Job, advance  # noqa: E402
from sparsernn.sparsity import resolve_method  # noqa: E402

NAME = "lsh_vs_baselines"
SEARCHES = {
    "lsh-tpe": {"sampler": "tpe"}, "loss-tpe": {"sampler": "tpe", "rank_by": "loss"},
    "hyperband": {"sampler": "tpe", "strategy": "hyperband"}, "lsh-atpe": {"sampler": "atpe"},
    "lsh-grid": {"sampler": "grid"}, "loss-grid": {"sampler": "grid", "rank_by": "loss"},
    "full-tpe": {"sampler": "tpe", "strategy": "full"},
}
UNITS = ["dense", "selfish-defaults", *SEARCHES]


def time_to(curve: list[list[float]], target: float) -> float | None:
    return next((seconds for seconds, ppl in curve if ppl <= target), None)


def report(result: dict) -> None:
    s = result["schedule"]
    print(f"model {s['model']}, {s['epochs']} epochs of {s['epoch_tokens']} tokens; n={s['n']}, e0={s['e0']}, "
          f"ei={s['ei']}, survivors={s['survivors']}")
    units = result["units"]
    searches = {k: v for k, v in units.items() if "time_to_target" in v}
    target = max((v["best_val_ppl"] for v in searches.values()), default=None)
    print(f"{'unit':18s} {'test ppl':>9s} {'best val':>9s} {'compute s':>10s} {'epochs':>7s} "
          f"{'s to val ' + (f'{target:.1f}' if target else '-'):>16s} {'overhead':>9s}")
    for name in UNITS:
        if name not in units:
            continue
        u = units[name]
        reach = time_to(u["time_to_target"], target) if name in searches and target else None
        reached = "-" if reach is None else f"{reach:.0f}"
        overhead = f"{100 * u['overhead']:.1f}%" if "overhead" in u else "-"
        print(f"{name:18s} {u['test_ppl']:9.2f} {u['best_val_ppl']:9.2f} {u['compute_seconds']:10.0f} "
              f"{u['epochs']:7d} {reached:>16s} {overhead:>9s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--e0", type=int, default=1)
    parser.add_argument("--ei", type=int, default=1)
    parser.add_argument("--survivors", type=int, default=2)
    parser.add_argument("--units", default=",".join(UNITS))
    parser.add_argument("--out", default="runs/lsh_vs_baselines")
    parser.add_argument("--report-only", action="store_true", help="print the stored JSON, no training")
    args = parser.parse_args()
    if args.report_only:
        report(read_result(NAME))
        return
    corpus_dir, note = resolve_lm_dir(args.data_dir)
    if note:
        sys.exit(f"lsh_vs_baselines.py needs PTB: {note}")
    base = resolve_config("hyperprune-demo")
    base.data.dir = str(corpus_dir.resolve())
    path = RESULTS / f"{NAME}.json"
    result = json.loads(path.read_text()) if path.is_file() else {
        "command": "python benchmarks/lsh_vs_baselines.py " + " ".join(sys.argv[1:]),
        "schedule": {"model": "2x64 LSTM (configs/hyperprune-demo.yaml)", "epochs": base.train.epochs,
                     "epoch_tokens": base.data.epoch_tokens, "n": args.n, "e0": args.e0, "ei": args.ei,
                     "survivors": args.survivors, "space": "paper"},
        "units": {}}
    out = Path(args.out)
    space = load_space("paper")
    for unit in args.units.split(","):
        if unit in result["units"]:
            continue
        started = time.perf_counter()
        if unit in ("dense", "selfish-defaults"):
            data = base.to_dict()
            data["sparsity"] = {"method": "dense"} if unit == "dense" else {"method": "selfish", "density": space.density}
            if unit == "selfish-defaults":  # Selfish-RNN as its paper runs it: SNT-ASGD, its default modes
                data["optim"]["name"] = "nt_asgd"
            config = resolve_method(validate(data, unit))
            progress = advance(Job(unit, config.to_dict(), str(out / unit), base.train.epochs, None))
            from sparsernn.runs import load_model
            from sparsernn.search.executor import corpus_for
            from sparsernn.tasks import build_task

            model, cfg, _, _ = load_model(out / unit)
            test = build_task(cfg, corpus_for(cfg)).evaluate(model, "test")
            result["units"][unit] = {"test_ppl": test["ppl"], "best_val_ppl": min(progress.val_ppl.values()),
                                     "compute_seconds": progress.train_seconds, "epochs": progress.epochs_trained}
        else:
            settings = SearchSettings(n=args.n, e0=args.e0, ei=args.ei, survivors=args.survivors, seed=0,
                                      **SEARCHES[unit])
            directory = out / unit
            search = Search.resume(directory) if (directory / "search.db").is_file() else \
                Search(directory, space, base, settings, reference_dir=out / "references")
            report_ = search.run()
            budget = report_["budget"]
            winner = next(r for r in report_["candidates"] if r["name"] == report_["winner"])
            result["units"][unit] = {
                "test_ppl": report_["test"]["test_ppl"], "best_val_ppl": winner["best_val_ppl"],
                "winner": report_["winner"], "winner_params": winner["params"],
                "compute_seconds": report_["compute_seconds"],
                "epochs": sum(b["epochs"] for b in budget.values() if isinstance(b, dict)),
                "overhead": report_["search_overhead"]["fraction"], "time_to_target": report_["time_to_target"],
                "budget": budget}
        result["units"][unit]["wall_seconds"] = time.perf_counter() - started
        write_result(NAME, {k: v for k, v in result.items() if k not in ("benchmark", "date", "machine")})
        print(f"{unit}: done", flush=True)
    report(result)


if __name__ == "__main__":
    main()
