"""Speed of the Lyapunov engine vs a straightforward reference, side by side in one run.

    python benchmarks/lyapunov_speed.py [--ckpt runs/bench-ptb-small/best.safetensors] [--data-dir DIR]
                                        [--samples 10] [--steps 100] [--reference-samples 10]

Model: a 2-layer LSTM with hidden 200 (ptb-small; a trained checkpoint if given), state (h, c): 800
dimensions. Sequences: K windows of T tokens from PTB valid. The reference loops over samples, takes
each step's full Jacobian with autograd through the nn.LSTM modules and re-orthonormalises with a
full Householder QR every step; it computes the whole spectrum once, and both engine runs are
compared against it (all 800 exponents, and the first k=64). Both run in float64. Figures: engine
speed-up for the full spectrum (target >= 3x) and for k=64 (target >= 50x), agreement with the
reference (target 1e-4), and the k=64 engine time as a share of one ptb-small training epoch
(target <= 2%), the epoch time measured here from 50 training steps. The engine's settings
(``--qr-every``, ``--orthonormalization``) are printed with the figures.
``--reference-samples`` below K times the reference on fewer samples and scales its time by K/that
(its cost is linear in samples); agreement is then checked on those samples. Writes
results/lyapunov_speed.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.data import load_corpus, resolve_lm_dir  # noqa: E402
from sparsernn.dynamics import lyapunov_spectrum, validation_sequences  # noqa: E402
from sparsernn.train import Trainer, build_model, load_model  # noqa: E402


def reference_spectrum(model, tokens: torch.Tensor) -> torch.Tensor:
    """Per-sample loop, autograd Jacobian per step, full Householder QR; (h, c) state, float64."""
    layers = list(model.layers)
    sizes = [layer.hidden_size for layer in layers]
    n = 2 * sum(sizes)
    results = []
    for sample in tokens:
        x_all = model.embedding(sample).double()
        state = torch.zeros(n, dtype=torch.float64)
        q = torch.eye(n, dtype=torch.float64)
        total = torch.zeros(n, dtype=torch.float64)

        def step(flat, x):
            out, offset = [], 0
            for layer, H in zip(layers, sizes):
                h, c = flat[offset:offset + H], flat[offset + H:offset + 2 * H]
                offset += 2 * H
                y, (h2, c2) = layer(x.view(1, 1, -1), (h.view(1, 1, H), c.view(1, 1, H)))
                out += [h2.view(H), c2.view(H)]
                x = y.view(-1)
            return torch.cat(out)

        for x in x_all:
            jacobian = torch.autograd.functional.jacobian(lambda v: step(v, x), state)
            with torch.no_grad():
                state = step(state, x)
                q, r = torch.linalg.qr(jacobian @ q)
                total += r.diagonal().abs().log()
        results.append(total / len(x_all))
    return torch.stack(results).mean(0).sort(descending=True).values


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--reference-samples", type=int, default=None)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--qr-every", type=int, default=1, help="engine: QR every s steps (full spectrum)")
    parser.add_argument("--orthonormalization", default="householder", choices=["householder", "cholesky"])
    args = parser.parse_args()

    corpus_dir, note = resolve_lm_dir(args.data_dir)
    if note:
        sys.exit(f"lyapunov_speed.py uses PTB: {note}")
    corpus = load_corpus(corpus_dir)
    config = resolve_config("ptb-small", overrides={"train.device": "cpu", "train.log_interval": 10**9,
                                                    "data.epoch_tokens": 50 * 400})
    if args.ckpt:
        model, *_ = load_model(args.ckpt)
    else:
        model = build_model(config, len(corpus.vocab), seed=0).eval()
    model = model.double().eval()
    tokens = validation_sequences(corpus.valid, args.samples, args.steps)
    ref_samples = args.reference_samples or args.samples
    ref_tokens = tokens[:ref_samples]
    scale = args.samples / ref_samples

    reference, reference_s = timed(lambda: reference_spectrum(model, ref_tokens))
    reference_s *= scale
    print(f"reference: {reference_s:.2f}s" + (f" (scaled from {ref_samples} samples)" if scale != 1 else "") +
          f", {1000 * reference_s / (args.samples * args.steps):.1f} ms per step per sample", flush=True)
    rows = {}
    for label, k in (("full", None), (f"k={args.k}", args.k)):
        options = {"k": k, "qr_every": args.qr_every, "orthonormalization": args.orthonormalization}
        engine, engine_s = timed(lambda: lyapunov_spectrum(model, tokens, **options))
        compared = engine.exponents if scale == 1 else lyapunov_spectrum(model, ref_tokens, **options).exponents
        agreement = float((compared - reference[: compared.numel()]).abs().max())
        rows[label] = {"k": k or reference.numel(), "engine_s": engine_s, "reference_s": reference_s,
                       "speedup": reference_s / engine_s, "max_abs_diff": agreement,
                       "top_exponents": engine.exponents[:5].tolist(), **options}
        print(f"{label:6s}: engine {engine_s:7.2f}s  speed-up {reference_s / engine_s:6.1f}x  "
              f"max |diff| vs reference {agreement:.2e}", flush=True)

    # one ptb-small training epoch on this machine, from 50 timed steps
    trainer = Trainer(config, corpus)
    trainer.train_epoch()
    trainer.advance_epoch()
    _, seconds = timed(trainer.train_epoch)
    epoch_s = seconds / trainer.steps_per_epoch * trainer.total_windows
    share = rows[f"k={args.k}"]["engine_s"] / epoch_s
    targets = {"full_speedup": 3.0, "k_speedup": 50.0, "agreement": 1e-4, "epoch_share": 0.02}
    passed = (rows["full"]["speedup"] >= 3.0 and rows[f"k={args.k}"]["speedup"] >= 50.0
              and max(r["max_abs_diff"] for r in rows.values()) <= 1e-4 and share <= 0.02)
    path = write_result("lyapunov_speed", {
        "command": "python benchmarks/lyapunov_speed.py " + " ".join(sys.argv[1:]),
        "samples": args.samples, "steps": args.steps, "reference_samples": ref_samples, "rows": rows,
        "reference_s": reference_s, "reference_ms_per_step_sample": 1000 * reference_s / (args.samples * args.steps),
        "ptb_small_epoch_s": epoch_s, "k_share_of_epoch": share, "targets": targets, "passed": passed,
        "model": args.ckpt or "ptb-small, random init (seed 0)",
    })
    print(f"ptb-small epoch here: {epoch_s:.1f}s; k={args.k} spectrum = {share:.2%} of it")
    print(f"{'PASS' if passed else 'FAIL'}; {path}")


if __name__ == "__main__":
    main()
