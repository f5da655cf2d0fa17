"""Does ISS learn a smaller LSTM that beats training that size directly? (Wen et al. 2018, Table 1)

    python benchmarks/iss_ptb.py --data-dir ../shared/data/ptb             # runs what the JSON lacks
    python benchmarks/iss_ptb.py --report-only

The CPU-scaled regime is the preset ``iss-ptb-cpu``: a 2x256 LSTM with dropout 0.3 on the first 100k
tokens of PTB, 6 epochs, where the dense model overfits (wider than ptb-small, so regularisation
matters). For each seed, as units appended to results/iss_ptb.json as they finish:

  dense                         the dense 2x256 (also the starting point of fine-tuning)
  scratch-T                     ISS from scratch, proximal group Lasso steered to the multiply-add
                                target T (a fraction of the recurrent multiply-adds), same budget
  finetune-T                    ISS fine-tuned from the dense model: ``--finetune-epochs`` more epochs
  direct-SIZES-dD               a dense model of exactly the learned sizes trained from scratch with the
                                same budget, for each dropout D of ``--dropouts``; the table uses the
                                dropout with the best validation perplexity (tuned on seed 1)

Every unit reports sizes, multiply-adds, valid/test perplexity and, for ISS, the measured inference
speed-up of the compacted model over the dense one (batch 10, 30 steps, interleaved). A run
interrupted midway resumes from its run directory.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, ptb_corpus, save_units, stored_or, study_parser, train_run  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.runs import BEST, load_model  # noqa: E402
from sparsernn.sparsity.iss import compact, removable_units, size_summary  # noqa: E402
from sparsernn.timing import inference_seconds  # noqa: E402

NAME = "iss_ptb"
PRESET = "iss-ptb-cpu"


def summary(directory: Path, results: dict) -> dict:
    model, *_ = load_model(directory / BEST)
    keep = [~z for z in removable_units(model)]
    small = compact(model, keep) if all(bool(k.any()) for k in keep) else model
    size = size_summary(small)
    return {"val_ppl": results["val_ppl"], "test_ppl": results["test_ppl"], "hidden_sizes": size["hidden_sizes"],
            "multiply_adds": size["multiply_adds"], "parameters": size["parameters"], "run": str(directory)}


def report(result: dict) -> None:
    units = result["units"]
    print(f"{result['scale']}")
    print(f"{'unit':28s} {'seed':>4s} {'sizes':>10s} {'mult-adds':>10s} {'valid':>8s} {'test':>8s} {'speed-up':>9s}")
    for key, u in units.items():
        speed = f"{u['speedup']:.2f}x" if "speedup" in u else "-"
        print(f"{u['unit']:28s} {u['seed']:4d} {','.join(map(str, u['hidden_sizes'])):>10s} "
              f"{u['multiply_adds'] / 1e6:9.2f}M {u['val_ppl']:8.2f} {u['test_ppl']:8.2f} {speed:>9s}")
    table = comparison(result)
    if table:
        print("\nmean test perplexity over seeds at each learned size (direct design at its tuned dropout):")
        print(f"{'target':>7s} {'sizes':>10s} {'scratch':>9s} {'finetune':>9s} {'direct':>9s} {'dropout':>8s}")
        for row in table:
            print(f"{row['target']:7g} {','.join(map(str, row['sizes'])):>10s} {fmt(row['scratch'])} "
                  f"{fmt(row['finetune'])} {fmt(row['direct'])} {row['direct_dropout']!s:>8s}")


def fmt(value: float | None) -> str:
    return f"{value:9.2f}" if value is not None else f"{'-':>9s}"


def comparison(result: dict) -> list[dict]:
    """Per target: mean test perplexity of ISS from scratch, fine-tuned, and of direct design at the
    dropout whose seed-1 validation perplexity was best."""
    units = result["units"].values()
    rows = []
    for target in result["targets"]:
        scratch = [u for u in units if u["unit"] == f"scratch-{target:g}"]
        if not scratch:
            continue
        sizes = scratch[0]["hidden_sizes"]
        direct = [u for u in units if u["unit"].startswith("direct-") and u["hidden_sizes"] == sizes]
        tuned = min((u for u in direct if u["seed"] == 1), key=lambda u: u["val_ppl"], default=None)
        chosen = [u for u in direct if tuned and u["dropout"] == tuned["dropout"]]
        finetune = [u for u in units if u["unit"] == f"finetune-{target:g}"]
        mean = lambda rows: statistics.mean(u["test_ppl"] for u in rows) if rows else None  # noqa: E731
        rows.append({"target": target, "sizes": sizes, "scratch": mean(scratch), "finetune": mean(finetune),
                     "direct": mean(chosen), "direct_dropout": tuned["dropout"] if tuned else None,
                     "seeds": sorted({u["seed"] for u in scratch})})
    return rows


def main() -> None:
    parser = study_parser(__doc__, out="runs/iss_ptb")
    parser.add_argument("--targets", default="0.5,0.25,0.125", help="recurrent multiply-add fractions")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--dropouts", default="0.15,0.3", help="direct design's dropout grid")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    corpus, corpus_dir = ptb_corpus(args.data_dir, "iss_ptb.py")
    targets = [float(t) for t in args.targets.split(",")]
    base = resolve_config(PRESET, overrides={"data.dir": str(corpus_dir.resolve())})
    result = stored_or(NAME, {
        "command": command_line(), "preset": PRESET,
        "scale": f"preset {PRESET}: 2x256 LSTM, dropout 0.3, {base.train.epochs} epochs of the first "
                 f"{base.data.train_tokens} PTB training tokens; fine-tuning {args.finetune_epochs} epochs",
        "targets": targets, "units": {}})
    out = Path(args.out)

    def done(key: str, unit: str, seed: int, directory: Path, results: dict, **extra) -> dict:
        entry = {"unit": unit, "seed": seed, **summary(directory, results), **extra}
        result["units"][key] = entry
        save_units(NAME, result)
        print(f"{key}: valid {entry['val_ppl']:.2f} test {entry['test_ppl']:.2f} sizes {entry['hidden_sizes']}",
              flush=True)
        return entry

    def run(key: str, unit: str, seed: int, overrides: dict, **extra) -> dict:
        if key in result["units"]:
            return result["units"][key]
        directory = out / key
        config = resolve_config(PRESET, overrides={"data.dir": str(corpus_dir.resolve()), "train.seed": seed,
                                                   **overrides})
        results, _ = train_run(config, corpus, directory)
        return done(key, unit, seed, directory, results, **extra)

    def speedup(entry: dict, dense_dir: Path) -> None:
        if "speedup" in entry:
            return
        dense, *_ = load_model(dense_dir / BEST)
        model, *_ = load_model(Path(entry["run"]) / BEST)
        small = compact(model)
        seconds = inference_seconds({"dense": dense, "compacted": small}, dense.decoder.out_features, repeats=15)
        entry["speedup"] = seconds["dense"] / seconds["compacted"]
        save_units(NAME, result)

    dropouts = [float(d) for d in args.dropouts.split(",")]
    for seed in (int(s) for s in args.seeds.split(",")):
        dense = run(f"dense-s{seed}", "dense", seed, {})
        dense_dir = Path(dense["run"])
        for target in targets:
            common = {"sparsity.method": "iss", "sparsity.target_multiply_adds": target}
            scratch = run(f"scratch-{target:g}-s{seed}", f"scratch-{target:g}", seed, common)
            speedup(scratch, dense_dir)
            tuned = run(f"finetune-{target:g}-s{seed}", f"finetune-{target:g}", seed, {
                **common, "train.init_from": str(dense_dir / BEST), "train.epochs": args.finetune_epochs,
                "optim.decay_start_epoch": 1})
            speedup(tuned, dense_dir)
            sizes = scratch["hidden_sizes"]
            tag = "-".join(map(str, sizes))
            # seed 1 tunes the dropout; later seeds train the chosen one only
            grid = dropouts if seed == 1 else [min(
                (u for u in result["units"].values() if u["unit"] == f"direct-{tag}" and u["seed"] == 1),
                key=lambda u: u["val_ppl"])["dropout"]]
            for dropout in grid:
                run(f"direct-{tag}-d{dropout:g}-s{seed}", f"direct-{tag}", seed,
                    {"model.hidden_sizes": sizes, "model.dropout": dropout}, dropout=dropout)
    result["comparison"] = comparison(result)
    save_units(NAME, result)
    report(result)


if __name__ == "__main__":
    main()
