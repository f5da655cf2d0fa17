"""Per-layer vs whole-stack bases: two finite-T estimates of one Lyapunov spectrum, and how they converge.

    python benchmarks/lyapunov_bases.py --ckpt runs/ptb-small-3ep/best.safetensors [--samples 2]
                                        [--lengths 100,400,1600] [--data-dir DIR]

For each sequence length T (windows starting at the same evenly spaced validation offsets), the full
(h, c) spectrum with ``basis="layers"`` (the engine's default) and ``basis="stack"`` (the public
code's). Reported: the gap between the two at each T, and each one's distance to the longest run's
stack spectrum (the best estimate of the T -> infinity spectrum available here). The question: is
the per-layer estimate at T=100 any further from the limit than the stack estimate? Writes
results/lyapunov_bases.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, study_parser, write_result  # noqa: E402

from sparsernn.data import load_corpus, resolve_lm_dir  # noqa: E402
from sparsernn.dynamics import lyapunov_spectrum, validation_sequences  # noqa: E402
from sparsernn.runs import load_model  # noqa: E402


def distances(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    gap = a - b
    return {"rms": float(gap.pow(2).mean().sqrt()), "max": float(gap.abs().max()),
            "max_leading_64": float(gap[:64].abs().max()),
            **{f"{f}": float(abs(v)) for f, v in (("max_feature", a[0] - b[0]), ("mean_feature", a.mean() - b.mean()),
                                                  ("variance_feature", a.var(unbiased=False) - b.var(unbiased=False)))}}


def main() -> None:
    parser = study_parser(__doc__, stored=False)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--lengths", default="100,400,1600")
    args = parser.parse_args()

    corpus_dir, note = resolve_lm_dir(args.data_dir)
    if note:
        sys.exit(f"lyapunov_bases.py uses PTB: {note}")
    valid = load_corpus(corpus_dir).valid
    model, *_ = load_model(args.ckpt)
    model = model.double().eval()
    lengths = [int(t) for t in args.lengths.split(",")]
    spectra = {}
    for steps in lengths:
        tokens = validation_sequences(valid, args.samples, steps)
        spectra[steps] = {basis: lyapunov_spectrum(model, tokens, basis=basis).exponents for basis in ("layers", "stack")}
        print(f"T={steps}: max |layers - stack| {float((spectra[steps]['layers'] - spectra[steps]['stack']).abs().max()):.4f}",
              flush=True)
    limit = spectra[lengths[-1]]["stack"]
    rows = []
    for steps in lengths:
        row = {"T": steps, "layers_vs_stack": distances(spectra[steps]["layers"], spectra[steps]["stack"])}
        for basis in ("layers", "stack"):
            row[f"{basis}_vs_limit"] = distances(spectra[steps][basis], limit)
        rows.append(row)
    path = write_result("lyapunov_bases", {
        "command": command_line(),
        "model": args.ckpt, "samples": args.samples, "limit": f"stack basis, T={lengths[-1]}", "rows": rows,
        "spectra": {str(t): {b: e.tolist() for b, e in s.items()} for t, s in spectra.items()},
    })
    print(f"\n{'T':>5s} {'layers-stack rms':>17s} {'max':>7s} | {'to limit: layers rms':>21s} {'stack rms':>10s}"
          f" | {'max feature: layers':>20s} {'stack':>7s}")
    for row in rows:
        gap, lay, stk = row["layers_vs_stack"], row["layers_vs_limit"], row["stack_vs_limit"]
        print(f"{row['T']:5d} {gap['rms']:17.4f} {gap['max']:7.4f} | {lay['rms']:21.4f} {stk['rms']:10.4f}"
              f" | {lay['max_feature']:20.4f} {stk['max_feature']:7.4f}")
    print(path)


if __name__ == "__main__":
    main()
