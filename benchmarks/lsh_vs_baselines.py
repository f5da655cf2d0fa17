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
  full-grid                        full-training search over the whole grid (the paper's baseline)
  top-k                            one-epoch top-K: rank by validation loss after e0, keep the survivors
  pareto-tpe, keep-lsh-tpe,        the search as it runs by default since issue 25 (the best model seen
  keep-loss-tpe, ranksum-tpe,      never eliminated, dense to the end) with each ranking rule: Pareto
  band-tpe                         (LS, loss), the paper's LS, loss, LS rank + loss rank, LS within
                                   validation's noise band

The units before top-k run each rule alone (keep_best and dense_to_end off), as every study before
issue 25 did, so that stored units and new ones mean the same.

For each search: the winner's final test perplexity, the compute seconds spent, and the time each
took to reach the best validation perplexity that every search reached.

    OMP_NUM_THREADS=1 python benchmarks/lsh_vs_baselines.py --data-dir ../shared/data/ptb --n 8

The committed run uses one torch thread, so that the other core of a 2-core machine stays free and
every search is timed under the same load. A longer schedule, where the cost ratios the paper reports
can show, is a study of its own (``--tag`` names its JSON and run directory):

    OMP_NUM_THREADS=1 python benchmarks/lsh_vs_baselines.py --data-dir ../shared/data/ptb --tag long \
        --epochs 15 --epoch-tokens 20000 --decay-start-epoch 6 --lr-decay 0.75 \
        --units dense,lsh-grid,full-grid,hyperband,lsh-tpe
    python benchmarks/lsh_vs_baselines.py --report-only

Two processes of one study may run side by side (one per core, each with its own ``--units``; each
unit is merged into the JSON as it finishes), as the 20-epoch study with another seed did:

    OMP_NUM_THREADS=1 python benchmarks/lsh_vs_baselines.py --data-dir ../shared/data/ptb --tag e20 --seed 2 \
        --n 16 --epochs 20 --epoch-tokens 20000 --decay-start-epoch 8 --lr-decay 0.8 --units full-grid,hyperband
    (the same with --units dense,lsh-grid,lsh-tpe,loss-grid,selfish-defaults,lsh-atpe,loss-tpe)

Units that share the dense reference may run in either process: jobs on one run directory wait for
each other (a file lock), and each search is charged the reference it used. ``--report-only`` reports every study under the search's current accounting (see
``with_current_accounting``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS,
    command_line,
    parse_study,
    read_result,
    save_units,
    spearman_with_interval,
    study_parser,
    write_result,
)

from sparsernn.config import resolve_config, validate  # noqa: E402
from sparsernn.data import resolve_lm_dir  # noqa: E402
from sparsernn.search import Search, SearchSettings, load_space  # noqa: E402
from sparsernn.search.executor import Job, advance  # noqa: E402
from sparsernn.sparsity import resolve_method  # noqa: E402

NAME = "lsh_vs_baselines"
# the studies before issue 25 ran each rule alone, with no dense reference past the rounds: these units
# keep that meaning (PAPER); the units after them run the search as it runs by default now
PAPER = {"keep_best": False, "dense_to_end": False}
SEARCHES = {
    "lsh-tpe": {"sampler": "tpe", **PAPER}, "loss-tpe": {"sampler": "tpe", "rank_by": "loss", **PAPER},
    "hyperband": {"sampler": "tpe", "strategy": "hyperband", **PAPER}, "lsh-atpe": {"sampler": "atpe", **PAPER},
    "lsh-grid": {"sampler": "grid", **PAPER}, "loss-grid": {"sampler": "grid", "rank_by": "loss", **PAPER},
    "full-tpe": {"sampler": "tpe", "strategy": "full", **PAPER},
    "full-grid": {"sampler": "grid", "strategy": "full", **PAPER},
    "top-k": {"sampler": "tpe", "strategy": "top_k", "rank_by": "loss", **PAPER},  # "Is one epoch all you need?"
    "pareto-tpe": {"sampler": "tpe", "rank_by": "pareto"},  # LS and loss together, the best seen kept
    "keep-lsh-tpe": {"sampler": "tpe", "rank_by": "ls"},  # the paper's rule with the best model seen kept
    "keep-loss-tpe": {"sampler": "tpe", "rank_by": "loss"},  # validation loss, the best model seen kept
    "ranksum-tpe": {"sampler": "tpe", "rank_by": "rank_sum"},  # LS rank + loss rank, the best seen kept
    "band-tpe": {"sampler": "tpe", "rank_by": "ls_band"},  # LS within validation's noise band, the best kept
}
UNITS = ["dense", "selfish-defaults", *SEARCHES]


def candidate_rows(search_report: dict) -> list[dict]:
    """What each candidate of a search did: its point, how far it got, its scores and best perplexity."""
    return [{key: row[key] for key in ("name", "params", "status", "epoch", "scores", "val_ppl", "best_val_ppl")}
            for row in search_report["candidates"]]


def grid_against_full(units: dict) -> None:
    """Where the grid searches' picks rank among the same 24 candidates trained to the end (full-grid,
    same seeds: the same runs), and how well each round's scores order those final perplexities."""
    final = {c["name"]: c["best_val_ppl"] for c in units["full-grid"]["candidates"]}
    ranking = sorted(final, key=final.get)
    print(f"full-grid: the 24 candidates' best valid ppl {final[ranking[0]]:.2f} .. {final[ranking[-1]]:.2f}: "
          + ", ".join(f"{final[n]:.1f}" for n in ranking))
    point = {json.dumps(c["params"], sort_keys=True): c["name"] for c in units["full-grid"]["candidates"]}
    for name, unit in units.items():  # every search's pick, and what it tried, among the grid's 24 ranked
        if name == "full-grid" or "candidates" not in unit:
            continue
        tried = {point[json.dumps(c["params"], sort_keys=True)]: c for c in unit["candidates"]}
        best_tried = min(tried, key=ranking.index)
        print(f"{name}: winner #{ranking.index(point[json.dumps(unit['winner_params'], sort_keys=True)]) + 1} of 24; "
              f"tried {len(tried)} of the 24 configurations, the best of them #{ranking.index(best_tried) + 1} "
              f"({tried[best_tried]['status']} at epoch {tried[best_tried]['epoch']})")
    early = {c["name"]: c["val_ppl"] for c in units["full-grid"]["candidates"]}
    for epoch in (1, 2):  # the plain signal: validation perplexity (monotone in loss) after a few epochs
        rho, low, high = spearman_with_interval([early[n][str(epoch)] for n in ranking], [final[n] for n in ranking])
        print(f"  epoch {epoch}: Spearman(valid ppl then, final valid ppl) over 24 candidates {rho:+.3f} "
              f"[{low:+.3f}, {high:+.3f}]")
    for name in ("lsh-grid", "loss-grid"):
        if "candidates" not in units.get(name, {}):
            continue
        rows = {c["name"]: c for c in units[name]["candidates"]}
        picks = [n for n, c in rows.items() if c["status"] in ("winner", "survivor")]
        print(f"{name}: its winner {units[name]['winner']} is #{ranking.index(units[name]['winner']) + 1} of 24, "
              f"its survivors #{', #'.join(str(ranking.index(n) + 1) for n in sorted(picks, key=ranking.index))}; "
              f"the best ({ranking[0]}) was {rows[ranking[0]]['status']} at epoch {rows[ranking[0]]['epoch']}")
        epochs = sorted({int(e) for c in rows.values() for e in c["scores"]})
        for epoch in epochs:
            scored = [n for n, c in rows.items() if str(epoch) in c["scores"]]
            if len(scored) >= 4:
                rho, low, high = spearman_with_interval([rows[n]["scores"][str(epoch)] for n in scored],
                                                        [final[n] for n in scored])
                print(f"  epoch {epoch}: Spearman(score, final valid ppl) over {len(scored)} candidates {rho:+.3f} "
                      f"[{low:+.3f}, {high:+.3f}]")


def time_to(curve: list[list[float]], target: float) -> float | None:
    return next((seconds for seconds, ppl in curve if ppl <= target), None)


ACCOUNTING = 2  # units stored since: cached references charged, time-to-target points per epoch


def with_current_accounting(result: dict) -> dict:
    """The units as the search's accounting now counts them. Units stored before (no ``accounting``
    key) get two corrections, each printed: a search that reused the dense reference another unit
    trained is charged the reference epochs it used at the reference's cost per epoch; a
    full-training search's time-to-target curve, stamped when each candidate's job ended, gets a
    point at every epoch that improved on the best (every epoch costing the unit's mean)."""
    units = json.loads(json.dumps(result["units"]))
    s = result["schedule"]
    reference = [u["budget"]["reference"] for u in units.values() if "reference" in u.get("budget", {})]
    epochs = sum(r["epochs"] for r in reference)
    train_per_epoch = sum(r["train_seconds"] for r in reference) / epochs if epochs else 0.0
    ls_per_epoch = sum(r["ls_seconds"] for r in reference) / epochs if epochs else 0.0
    for name, u in units.items():
        if u.get("accounting", 1) >= ACCOUNTING or "budget" not in u:
            continue
        rounds = sum(key.startswith("round ") for key in u["budget"])
        if "reference" in u["budget"] and rounds:
            needed = s["e0"] + s["ei"] * (rounds - 1)  # the last ranking's epoch
            missing = needed - u["budget"]["reference"]["epochs"]
            if missing > 0:
                added, added_ls = missing * (train_per_epoch + ls_per_epoch), missing * ls_per_epoch
                before = u["compute_seconds"]
                u["compute_seconds"] += added
                u["epochs"] += missing
                u["overhead"] = (u["overhead"] * before + added_ls) / u["compute_seconds"]  # its spectra count
                # every point later by all of it: exact after the rounds (the final phase), later than
                # the current accounting would place the earlier ones
                u["time_to_target"] = [[seconds + added, value] for seconds, value in u["time_to_target"]]
                print(f"  {name}: + {missing} reference epochs another unit trained ({added:.0f} s, added to its "
                      "compute and to every time-to-target point)")
        if name.startswith("full-") and u.get("candidates"):
            seconds = u["compute_seconds"] / u["epochs"]
            spent, curve = 0.0, []
            for row in sorted(u["candidates"], key=lambda r: r["name"]):  # the order the search trained them
                for epoch in sorted(row["val_ppl"], key=int):
                    spent += seconds
                    if not curve or row["val_ppl"][epoch] < curve[-1][1]:
                        curve.append([spent, row["val_ppl"][epoch]])
            u["time_to_target"] = curve
            print(f"  {name}: time-to-target per epoch (was per candidate)")
    return units


def report(result: dict) -> None:
    s = result["schedule"]
    print(f"model {s['model']}, {s['epochs']} epochs of {s['epoch_tokens']} tokens; n={s['n']}, e0={s['e0']}, "
          f"ei={s['ei']}, survivors={s['survivors']}" + (f", seed {s['seed']}" if s.get("seed") is not None else ""))
    units = with_current_accounting(result)
    searches = {k: v for k, v in units.items() if "time_to_target" in v}
    target = max((v["best_val_ppl"] for v in searches.values()), default=None)
    best = min((v["best_val_ppl"] for v in searches.values()), default=None)  # the best any search found
    print(f"{'unit':18s} {'test ppl':>9s} {'best val':>9s} {'compute s':>10s} {'epochs':>7s} "
          f"{'s to val ' + (f'{target:.1f}' if target else '-'):>16s} "
          f"{'s to val ' + (f'{best:.1f}' if best else '-'):>16s} {'overhead':>9s}")
    for name in UNITS:
        if name not in units:
            continue
        u = units[name]
        reach = time_to(u["time_to_target"], target) if name in searches and target else None
        reached = "-" if reach is None else f"{reach:.0f}"
        to_best = time_to(u["time_to_target"], best) if name in searches and best else None
        overhead = f"{100 * u['overhead']:.1f}%" if "overhead" in u else "-"
        print(f"{name:18s} {u['test_ppl']:9.2f} {u['best_val_ppl']:9.2f} {u['compute_seconds']:10.0f} "
              f"{u['epochs']:7d} {reached:>16s} {'-' if to_best is None else f'{to_best:.0f}':>16s} {overhead:>9s}")
    if "candidates" in units.get("full-grid", {}):
        grid_against_full(units)
    if "dense" in units:  # each search's winner against the dense model and against the best any search found
        dense = units["dense"]["best_val_ppl"]
        for name, u in searches.items():
            print(f"{name}: winner valid {u['best_val_ppl']:.2f}, {100 * (u['best_val_ppl'] / dense - 1):+.1f}% from "
                  f"dense ({dense:.2f}), {100 * (u['best_val_ppl'] / best - 1):+.2f}% from the best found ({best:.2f})")
    pairs = [("lsh-grid", "full-grid"), ("lsh-tpe", "full-tpe"), ("lsh-tpe", "full-grid"), ("lsh-grid", "hyperband"),
             ("lsh-tpe", "hyperband"), ("lsh-grid", "loss-grid"), ("band-tpe", "full-grid"), ("band-tpe", "hyperband"),
             ("band-tpe", "top-k"), ("keep-lsh-tpe", "full-grid"), ("keep-loss-tpe", "full-grid")]
    for lsh, other in pairs:
        if lsh in searches and other in searches:
            a, b = searches[lsh], searches[other]

            def sooner(value: float) -> str:
                reach_a, reach_b = time_to(a["time_to_target"], value), time_to(b["time_to_target"], value)
                return f"{reach_b / reach_a:.2f}x" if reach_a and reach_b else "-"

            print(f"{lsh} vs {other}: {b['epochs'] / a['epochs']:.2f}x fewer epochs, "
                  f"{b['compute_seconds'] / a['compute_seconds']:.2f}x less compute, {sooner(target)} sooner to "
                  f"valid {target:.1f}, {sooner(best)} sooner to valid {best:.1f}; best valid "
                  f"{a['best_val_ppl']:.2f} vs {b['best_val_ppl']:.2f}")


def result_name(args) -> str:
    """The study's JSON name: ``--tag`` keeps a study of its own."""
    return f"{NAME}_{args.tag}" if args.tag else NAME


def main() -> None:
    parser = study_parser(__doc__)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--e0", type=int, default=1)
    parser.add_argument("--ei", type=int, default=1)
    parser.add_argument("--survivors", type=int, default=2)
    parser.add_argument("--units", default=",".join(UNITS))
    parser.add_argument("--epochs", type=int, default=None, help="schedule length (default: the demo's 5)")
    parser.add_argument("--epoch-tokens", type=int, default=None, help="training tokens per epoch (demo: 80000)")
    parser.add_argument("--decay-start-epoch", type=int, default=None, help="last epoch at the initial lr")
    parser.add_argument("--lr-decay", type=float, default=None, help="lr factor per epoch after that")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of every candidate's training and of the samplers, for a replicate under its own "
                             "--tag (default: the preset's training seed 1, sampler seed 0)")
    parser.add_argument("--prunable", default=None,
                        help="weights masked, e.g. recurrent or embedding,recurrent,decoder (default: the demo's)")
    parser.add_argument("--tag", default="", help="a study of its own: results/lsh_vs_baselines_TAG.json")
    parser.add_argument("--out", default=None, help="run directory (default runs/lsh_vs_baselines[_TAG])")
    parser.add_argument("--backfill", action="store_true",
                        help="add each finished search's candidates from its report.json to the JSON (files written "
                             "before the JSON kept them), then report")
    args = parse_study(parser, result_name, report)
    if args is None:
        return
    name = result_name(args)
    if args.backfill:
        path, stored = RESULTS / f"{name}.json", read_result(name)
        for unit, entry in stored["units"].items():
            found = Path(args.out or f"runs/{name}") / unit / "report.json"
            if "time_to_target" in entry and "candidates" not in entry and found.is_file():
                entry["candidates"] = candidate_rows(json.loads(found.read_text()))
        write_result(name, {k: v for k, v in stored.items() if k not in ("benchmark", "date", "machine")})
        report(read_result(name))
        return
    corpus_dir, note = resolve_lm_dir(args.data_dir)
    if note:
        sys.exit(f"lsh_vs_baselines.py needs PTB: {note}")
    base = resolve_config("hyperprune-demo")
    base.data.dir = str(corpus_dir.resolve())
    if args.seed is not None:
        base.train.seed = args.seed
    if args.prunable is not None:
        base.sparsity.prunable = args.prunable.split(",")
    for value, section, field in [(args.epochs, base.train, "epochs"), (args.epoch_tokens, base.data, "epoch_tokens"),
                                  (args.decay_start_epoch, base.optim, "decay_start_epoch"),
                                  (args.lr_decay, base.optim, "lr_decay")]:
        if value is not None:
            setattr(section, field, value)
    base = validate(base.to_dict(), "lsh_vs_baselines schedule")
    path = RESULTS / f"{name}.json"
    schedule = {"model": "2x64 LSTM (configs/hyperprune-demo.yaml)", "epochs": base.train.epochs,
                "epoch_tokens": base.data.epoch_tokens, "lr": base.optim.lr,
                "decay_start_epoch": base.optim.decay_start_epoch, "lr_decay": base.optim.lr_decay, "n": args.n,
                "e0": args.e0, "ei": args.ei, "survivors": args.survivors, "space": "paper", "seed": args.seed,
                "prunable": base.sparsity.prunable}
    result = json.loads(path.read_text()) if path.is_file() else {
        "command": command_line(), "schedule": schedule,
        "units": {}}
    # keys older files lack: before issue 25 the demo's masks covered every weight
    older = {"lr": 20.0, "decay_start_epoch": 2, "lr_decay": 0.5, "seed": None,
             "prunable": ["embedding", "recurrent", "decoder"]}
    stored = {**older, **result["schedule"]}
    changed = [key for key, value in schedule.items() if stored.get(key) != value]
    if changed:  # a unit continued under other settings would mix two studies in one file
        sys.exit(f"{path}: holds a study with another {', '.join(changed)}; give its settings, or --tag for a "
                 "study of its own")
    out = Path(args.out or f"runs/{name}")
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
            result["units"][unit] = {"test_ppl": test["ppl"], "best_val_ppl": min(progress.val_metric.values()),
                                     "compute_seconds": progress.train_seconds, "epochs": progress.epochs_trained}
        else:
            settings = SearchSettings(n=args.n, e0=args.e0, ei=args.ei, survivors=args.survivors,
                                      seed=0 if args.seed is None else args.seed,
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
                "budget": budget, "candidates": candidate_rows(report_), "accounting": ACCOUNTING}
        result["units"][unit]["wall_seconds"] = time.perf_counter() - started
        save_units(name, result)  # keeps the units another process of this study stored meanwhile
        print(f"{unit}: done", flush=True)
    report(result)


if __name__ == "__main__":
    main()
