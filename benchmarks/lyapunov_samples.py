"""How many sequences does a Lyapunov spectrum need? Features from K=2 vs K=10 samples on two pruned
models (after the hyperpruning paper's Table 4).

    python benchmarks/lyapunov_samples.py MODEL_A MODEL_B [--steps 100] [--draws 5] [--k 200] [--basis layers]
    python benchmarks/lyapunov_samples.py --report-only [--tag TAG]   # print a stored result again

For each model: the spectrum from K=10 validation windows, and from K=2 windows drawn ``--draws``
times at random offsets. The study asks whether the K=2 vs K=10 difference in each feature (max,
mean, variance) is small next to the difference between the two models. Writes
results/lyapunov_samples.json and prints the table and the verdict.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, read_result, study_parser, write_result  # noqa: E402

from sparsernn.data import load_corpus  # noqa: E402
from sparsernn.dynamics import lyapunov_spectrum  # noqa: E402
from sparsernn.runs import BEST, load_model  # noqa: E402

FEATURES = ("max", "mean", "variance")


def windows(tokens: torch.Tensor, count: int, steps: int, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:  # evenly spaced
        starts = [i * (tokens.numel() // count) for i in range(count)]
    else:
        starts = torch.randint(0, tokens.numel() - steps, (count,), generator=generator).tolist()
    return torch.stack([tokens[s:s + steps] for s in starts])


def report(result: dict) -> None:
    """Print every figure of a lyapunov_samples result: each model's features, then the verdict."""
    print(f"{result['k']} leading exponents, basis {result['basis']}, T={result['steps']}, "
          f"K=2 drawn {result['draws']} times")
    print(f"{'model':24s} {'K':>13s} " + " ".join(f"{f:>17s}" for f in FEATURES))
    for name, r in result["models"].items():
        print(f"{name:24s} {'10':>13s} " + " ".join(f"{r['K10'][f]:17.4f}" for f in FEATURES))
        print(f"{name:24s} {'2 (mean ± sd)':>13s} "
              + " ".join(f"{r['K2_mean'][f]:8.4f} ± {r['K2_std'][f]:.4f}" for f in FEATURES))
    print(f"\n{'feature':9s} {'|A-B| (K=10)':>13s} {'max |K2-K10|':>13s} {'ratio':>7s}")
    for f, v in result["verdict"].items():
        ratio = f"{v['ratio']:.2f}" if v["ratio"] is not None else "-"
        print(f"{f:9s} {v['between_models']:13.4f} {v['max_K2_vs_K10']:13.4f} {ratio:>7s}  "
              f"{'small' if v['small'] else 'NOT small'} (small: max |K2-K10| < 0.25 |A-B|)")


def result_name(args) -> str:
    """The study's JSON name: ``--tag`` keeps a study of its own."""
    return "lyapunov_samples" + (f"-{args.tag}" if args.tag else "")


def main() -> None:
    parser = study_parser(__doc__, data_dir=False)
    parser.add_argument("models", nargs="*", type=Path, help="two models (run directories or checkpoints)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--k", type=int, default=200, help="exponents computed (the leading ones)")
    parser.add_argument("--basis", default="layers", choices=("layers", "stack"), help="the engine's basis")
    parser.add_argument("--tag", default="", help="suffix of the results file, to keep several studies")
    args = parse_study(parser, result_name, report)
    if args is None:
        return
    name = result_name(args)
    if len(args.models) != 2:
        parser.error("give two models")

    results = {}
    for path in args.models:
        model, config, _, _ = load_model(path / BEST if path.is_dir() else path)
        valid = load_corpus(config.data.dir).valid
        k10 = lyapunov_spectrum(model, windows(valid, 10, args.steps, None), k=args.k, basis=args.basis).features
        generator = torch.Generator().manual_seed(0)
        k2 = [lyapunov_spectrum(model, windows(valid, 2, args.steps, generator), k=args.k, basis=args.basis).features
              for _ in range(args.draws)]
        results[str(path)] = {
            "K10": k10,
            "K2_draws": k2,
            "K2_mean": {f: statistics.mean(d[f] for d in k2) for f in FEATURES},
            "K2_std": {f: statistics.stdev(d[f] for d in k2) for f in FEATURES},
        }
        print(f"{path}: K=10 " + "  ".join(f"{f} {k10[f]:.4f}" for f in FEATURES), flush=True)
    a, b = (results[str(p)] for p in args.models)
    verdict = {}
    for f in FEATURES:
        between = abs(a["K10"][f] - b["K10"][f])
        within = max(max(abs(d[f] - r["K10"][f]) for d in r["K2_draws"]) for r in (a, b))
        verdict[f] = {"between_models": between, "max_K2_vs_K10": within, "ratio": within / between if between else None,
                      "small": within < 0.25 * between}
    path = write_result(name, {
        "command": command_line(),
        "steps": args.steps, "draws": args.draws, "k": args.k, "basis": args.basis, "models": results,
        "verdict": verdict,
    })
    print()
    report(read_result(name))
    print(path)


if __name__ == "__main__":
    main()
