"""A CPU-scaled RHN on PTB: its perplexity curve, an ISS run that learns a narrower width with the
compacted model's measured speed-up, and the Lyapunov spectrum of both.

    python benchmarks/rhn_ptb.py --data-dir ../shared/data/ptb [--epochs 6 --epoch-tokens 100000]
    python benchmarks/rhn_ptb.py --report-only

The model is the ``rhn-cpu`` preset (recurrence depth 10, width 200, tied, variational dropout),
trained ``--epochs`` epochs of ``--epoch-tokens`` tokens (lr halved from epoch 4); the ISS run is
the same with ``--method iss --target-units 120`` (reached at 3/4 of the run). Units ``dense`` and
``iss`` are appended to results/rhn_ptb.json as they finish; the curve is plotted to
results/rhn_ptb.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS,
    command_line,
    parse_study,
    ptb_corpus,
    save_units,
    stored_or,
    study_parser,
    train_run,
)

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.dynamics import lyapunov_spectrum, validation_sequences  # noqa: E402
from sparsernn.runs import BEST, load_model  # noqa: E402
from sparsernn.sparsity.iss import compact, size_summary  # noqa: E402
from sparsernn.timing import inference_seconds  # noqa: E402

NAME = "rhn_ptb"


def report(result: dict) -> None:
    print(result["scale"])
    for name, u in result["units"].items():
        curve = " ".join(f"{v:.0f}" for v in u["curve"])
        extra = (f"; learned width {u['hidden_sizes'][0]}, {u['multiply_add_reduction']:.2f}x fewer mult-adds, "
                 f"{u['speedup']:.2f}x faster compacted") if "speedup" in u else ""
        print(f"{name:6s} valid {u['val_ppl']:.2f} test {u['test_ppl']:.2f} (valid by epoch: {curve}){extra}")
        print(f"       Lyapunov (first {len(u['spectrum'])}): max {u['spectrum'][0]:.3f}, "
              f"mean {sum(u['spectrum']) / len(u['spectrum']):.3f}")


def main() -> None:
    parser = study_parser(__doc__, out="runs/rhn_ptb")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--epoch-tokens", type=int, default=100_000)
    parser.add_argument("--target-units", type=int, default=120)
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    corpus, corpus_dir = ptb_corpus(args.data_dir, "rhn_ptb.py")
    result = stored_or(NAME, {
        "command": command_line(),
        "scale": f"rhn-cpu (depth 10, width 200, tied): {args.epochs} epochs of {args.epoch_tokens} PTB tokens",
        "units": {}})
    common = {"data.dir": str(corpus_dir.resolve()), "train.epochs": args.epochs,
              "data.epoch_tokens": args.epoch_tokens, "optim.decay_start_epoch": 3}
    runs = {"dense": {}, "iss": {"sparsity.method": "iss", "sparsity.target_units": [args.target_units]}}
    for name, extra in runs.items():
        if name in result["units"]:
            continue
        directory = Path(args.out) / name
        results, history = train_run(resolve_config("rhn-cpu", overrides={**common, **extra}), corpus, directory)
        model, *_ = load_model(directory / BEST)
        sequences = validation_sequences(corpus.valid, 6, 100)
        entry = {"val_ppl": results["val_ppl"], "test_ppl": results["test_ppl"],
                 "curve": [r["val_ppl"] for r in history], "hidden_sizes": model.hidden_sizes}
        if name == "iss":
            small = compact(model)
            dense, *_ = load_model(Path(args.out) / "dense" / BEST)
            seconds = inference_seconds({"dense": dense, "compacted": small}, dense.decoder.out_features, repeats=15)
            entry.update(hidden_sizes=small.hidden_sizes, speedup=seconds["dense"] / seconds["compacted"],
                         multiply_add_reduction=size_summary(dense)["multiply_adds"] / size_summary(small)[
                             "multiply_adds"])
            model = small
        spectrum = lyapunov_spectrum(model, sequences, k=32)
        entry["spectrum"] = [float(v) for v in spectrum.exponents]
        result["units"][name] = entry
        save_units(NAME, result)
        print(f"{name}: done", flush=True)
    from sparsernn.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
    for name, u in result["units"].items():
        ax.plot(range(1, len(u["curve"]) + 1), u["curve"], marker="o", label=f"{name} (width {u['hidden_sizes'][0]})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity")
    ax.set_title("RHN depth 10 on PTB (CPU-scaled)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, plt, RESULTS / f"{NAME}.png")
    report(result)


if __name__ == "__main__":
    main()
