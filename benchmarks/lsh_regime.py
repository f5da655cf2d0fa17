"""Which CPU regime lets pruning reach the dense model: dense vs sparse methods at density 0.33, per regime.

    python benchmarks/lsh_regime.py [--data-dir DIR] [--regimes demo-64,...] [--methods dense,static,...]
    python benchmarks/lsh_regime.py --report-only    # print the stored result again, no training

A regime is a model size, a training slice, dropout, a schedule and the set of pruned weights
(``sparsity.prunable``); each is a few overrides of a preset (``REGIMES`` below). Every method trains
the regime's whole schedule once; the table gives each one's best validation perplexity, its gap to
dense, the epoch of its best and the wall time of an epoch (these 2 cores, one thread per process).
Hyperpruning can only mean something where the best of a space gets near dense and the methods
differ: that is what this study measures, to choose the demo's and the studies' regime.

Units (regime, method) are stored in results/lsh_regime.json as each finishes; a unit already there
is skipped, so the study runs in pieces and resumes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_study, ptb_corpus, save_units, stored_or, study_parser  # noqa: E402

NAME = "lsh_regime"

W128_T50K = {"model.hidden_sizes": [128, 128], "model.dropout": 0.5, "data.epoch_tokens": None,
             "data.train_tokens": 50_000, "train.epochs": 10, "optim.decay_start_epoch": 6}

# regime -> (preset, overrides); every regime prunes at the demo space's density, 0.33
REGIMES: dict[str, tuple[str, dict]] = {
    # the demo before issue 25: every weight prunable (embedding and decoder included)
    "demo-64-all": ("hyperprune-demo", {"sparsity.prunable": ["embedding", "recurrent", "decoder"]}),
    # the demo (configs/hyperprune-demo.yaml): its model and schedule, only the recurrent weights pruned
    "demo-64-rec": ("hyperprune-demo", {"sparsity.prunable": ["recurrent"]}),
    # wider, a small training slice seen many times with dropout: dense overfits, as at paper scale
    "w128-t50k-rec": ("hyperprune-demo", {**W128_T50K, "sparsity.prunable": ["recurrent"]}),
    "w128-t50k-recdec": ("hyperprune-demo", {**W128_T50K, "sparsity.prunable": ["recurrent", "decoder"]}),
    "w256-t100k-rec": ("iss-ptb-cpu", {"sparsity.prunable": ["recurrent"]}),
    # a slice small enough that dense overfits within the schedule (its best epoch before the last)
    "w128-t20k-rec": ("hyperprune-demo", {"model.hidden_sizes": [128, 128], "model.dropout": 0.2,
                                          "data.epoch_tokens": None, "data.train_tokens": 20_000,
                                          "train.epochs": 12, "optim.decay_start_epoch": 8,
                                          "sparsity.prunable": ["recurrent"]}),
    "w256-t20k-rec": ("hyperprune-demo", {"model.hidden_sizes": [256, 256], "model.dropout": 0.3,
                                          "data.epoch_tokens": None, "data.train_tokens": 20_000,
                                          "train.epochs": 12, "optim.decay_start_epoch": 8,
                                          "sparsity.prunable": ["recurrent"]}),
}

# method -> its settings (density 0.33 for every sparse one); ER init where a method takes it
METHODS: dict[str, dict] = {
    "dense": {"sparsity.method": "dense"},
    "static": {"sparsity.method": "static", "sparsity.density": 0.33, "sparsity.init": "er"},
    "set": {"sparsity.method": "set", "sparsity.density": 0.33, "sparsity.init": "er"},
    "rigl": {"sparsity.method": "rigl", "sparsity.density": 0.33, "sparsity.init": "er"},
    "selfish": {"sparsity.method": "selfish", "sparsity.density": 0.33, "sparsity.init": "er"},
    # the same methods at density 0.5: how much of the gap is the density itself
    "static-d50": {"sparsity.method": "static", "sparsity.density": 0.5, "sparsity.init": "er"},
    "rigl-d50": {"sparsity.method": "rigl", "sparsity.density": 0.5, "sparsity.init": "er"},
}


def config_for(regime: str, method: str, data_dir: str):
    from sparsernn.config import resolve_config
    from sparsernn.sparsity import resolve_method

    preset, overrides = REGIMES[regime]
    overrides = {**overrides, **METHODS[method], "data.dir": data_dir, "train.device": "cpu"}
    if method == "dense":
        overrides.pop("sparsity.prunable", None)
    return resolve_method(resolve_config(preset, None, overrides))


def run_unit(regime: str, method: str, corpus, corpus_dir: Path, out: Path) -> dict:
    from sparsernn.train import Trainer

    config = config_for(regime, method, str(corpus_dir))
    started = time.perf_counter()
    trainer = Trainer.open(out / regime / method, corpus, config)  # continues a killed unit
    trainer.fit()
    seconds = time.perf_counter() - started
    curve = [round(r["val_ppl"], 2) for r in trainer.history]
    best = min(range(len(curve)), key=curve.__getitem__)
    return {"regime": regime, "method": method, "val_ppl": curve[best], "best_epoch": best + 1,
            "val_ppl_per_epoch": curve, "epochs": len(curve), "seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / len(curve), 2),
            "prunable": config.sparsity.prunable if method != "dense" else None,
            "hidden_sizes": config.model.hidden_sizes}


def report(result: dict) -> None:
    units = result["units"]
    print(f"{'regime':18s} {'method':8s} {'best valid':>10s} {'vs dense':>9s} {'at epoch':>8s} {'s/epoch':>8s}")
    for regime in REGIMES:
        dense = units.get(f"{regime}/dense")
        for method in METHODS:
            row = units.get(f"{regime}/{method}")
            if row is None:
                continue
            gap = f"{100 * (row['val_ppl'] / dense['val_ppl'] - 1):+8.1f}%" if dense else "-"
            print(f"{regime:18s} {method:8s} {row['val_ppl']:10.2f} {gap:>9s} {row['best_epoch']:8d} "
                  f"{row['seconds_per_epoch']:8.2f}")


def main() -> None:
    parser = study_parser(__doc__, out="runs/lsh_regime")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    import torch

    torch.set_num_threads(1)
    corpus, corpus_dir = ptb_corpus(args.data_dir, "lsh_regime.py")
    result = stored_or(NAME, {"units": {}})
    for regime in args.regimes.split(","):
        for method in args.methods.split(","):
            key = f"{regime}/{method}"
            if key in result["units"]:
                continue
            result["units"][key] = run_unit(regime, method, corpus, corpus_dir, Path(args.out))
            save_units(NAME, result)
            print(f"{key}: {result['units'][key]['val_ppl']}", flush=True)
    report(result)


if __name__ == "__main__":
    main()
