"""Speed of the Lyapunov engine vs straightforward references, side by side in one run.

    python benchmarks/lyapunov_speed.py [--ckpt runs/bench-ptb-small/best.safetensors] [--data-dir DIR]
                                        [--samples 10] [--steps 100] [--k 64] [--qr-every 4]

Model: the 2-layer LSTM with hidden 200 (ptb-small; a trained checkpoint if given), state (h, c): 800
dimensions. Sequences: K windows of T tokens from PTB valid. Two references, each a per-sample loop
with an autograd Jacobian per step and a full Householder QR every step, computing the whole spectrum:
``jacrev`` (torch.func.jacrev of the step written out functionally: the fast way to get a Jacobian
from autograd) and ``autograd`` (torch.autograd.functional.jacobian, vectorized, through the nn.LSTM
modules; timed on ``--autograd-samples`` samples and scaled to K, its cost being linear in samples).
The engine computes the full spectrum (QR every step) and the first k=64 exponents (QR every
``--qr-every`` steps); both are compared with the references (agreement target 1e-4, float64).
Targets: full >= 3x, k=64 >= 50x, and the k=64 spectrum <= 2% of one ptb-small training epoch (the
epoch time measured here from 50 training steps). Writes results/lyapunov_speed.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.func import jacrev

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.data import load_corpus, resolve_lm_dir  # noqa: E402
from sparsernn.dynamics import lyapunov_spectrum, validation_sequences  # noqa: E402
from sparsernn.train import Trainer, build_model, load_model  # noqa: E402


def _lstm_step_functional(params, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One step of the LSTM stack on a flat (h1, c1, h2, c2) state, written out for torch.func."""
    out, offset = [], 0
    for w_ih, w_hh, bias in params:
        H = w_hh.shape[1]
        h, c = flat[offset:offset + H], flat[offset + H:offset + 2 * H]
        offset += 2 * H
        i, f, g, o = (w_ih @ x + w_hh @ h + bias).chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out += [h, c]
        x = h
    return torch.cat(out)


def reference_spectrum(model, tokens: torch.Tensor, jacobian: str) -> torch.Tensor:
    """Per-sample loop, an autograd Jacobian per step, full Householder QR every step; (h, c), float64.

    ``jacobian="jacrev"``: torch.func.jacrev of the step written out functionally (vmap'd reverse mode);
    ``jacobian="autograd"``: torch.autograd.functional.jacobian (vectorize=True) through the nn.LSTM modules.
    """
    layers = list(model.layers)
    params = [(l.weight_ih_l0.detach().double(), l.weight_hh_l0.detach().double(),
               (l.bias_ih_l0 + l.bias_hh_l0).detach().double()) for l in layers]
    n = 2 * sum(layer.hidden_size for layer in layers)

    def module_step(flat, x):
        out, offset = [], 0
        for layer in layers:
            H = layer.hidden_size
            h, c = flat[offset:offset + H], flat[offset + H:offset + 2 * H]
            offset += 2 * H
            y, (h2, c2) = layer(x.view(1, 1, -1), (h.view(1, 1, H), c.view(1, 1, H)))
            out += [h2.view(H), c2.view(H)]
            x = y.view(-1)
        return torch.cat(out)

    results = []
    for sample in tokens:
        x_all = model.embedding(sample).detach().double()
        state = torch.zeros(n, dtype=torch.float64)
        q = torch.eye(n, dtype=torch.float64)
        total = torch.zeros(n, dtype=torch.float64)
        for x in x_all:
            if jacobian == "jacrev":
                matrix = jacrev(lambda v: _lstm_step_functional(params, v, x))(state)
            else:
                matrix = torch.autograd.functional.jacobian(lambda v: module_step(v, x), state, vectorize=True)
            with torch.no_grad():
                state = _lstm_step_functional(params, state, x)
                q, r = torch.linalg.qr(matrix @ q)
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
    parser.add_argument("--qr-every", type=int, default=4, help="engine, k-column run: QR every s steps")
    parser.add_argument("--autograd-samples", type=int, default=2,
                        help="samples for the slow autograd.functional reference (time scaled to K)")
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

    references = {}
    for name, samples in (("jacrev", ref_samples), ("autograd", args.autograd_samples)):
        value, seconds = timed(lambda: reference_spectrum(model, tokens[:samples], name))
        references[name] = {"exponents": value, "samples": samples, "seconds": seconds * args.samples / samples,
                            "ms_per_step_sample": 1000 * seconds / (samples * args.steps)}
        print(f"reference ({name}): {references[name]['seconds']:.1f}s for K={args.samples}"
              + (f" (scaled from {samples} samples)" if samples != args.samples else "")
              + f", {references[name]['ms_per_step_sample']:.1f} ms per step per sample", flush=True)
    rows = {}
    # the full spectrum needs QR every step: its tail (exponents near -inf from saturated gates) is lost
    # in a product of even two Jacobians; the leading k exponents are exact with QR every s steps
    for label, k, qr_every in (("full", None, 1), (f"k={args.k}", args.k, args.qr_every)):
        options = {"k": k, "qr_every": qr_every}
        engine, engine_s = timed(lambda: lyapunov_spectrum(model, tokens, **options))
        row = {"k": k or engine.exponents.numel(), "qr_every": qr_every, "engine_s": engine_s,
               "top_exponents": engine.exponents[:5].tolist(), "min_exponent": float(engine.exponents[-1])}
        for name, ref in references.items():
            compared = lyapunov_spectrum(model, tokens[:ref["samples"]], **options).exponents \
                if ref["samples"] != args.samples else engine.exponents
            row[f"speedup_vs_{name}"] = ref["seconds"] / engine_s
            row[f"max_abs_diff_vs_{name}"] = float((compared - ref["exponents"][: compared.numel()]).abs().max())
        rows[label] = row
        print(f"{label:6s}: engine {engine_s:7.2f}s  speed-up {row['speedup_vs_jacrev']:6.1f}x (jacrev) "
              f"{row['speedup_vs_autograd']:6.1f}x (autograd)  max |diff| {row['max_abs_diff_vs_jacrev']:.1e}, "
              f"{row['max_abs_diff_vs_autograd']:.1e}", flush=True)

    # one ptb-small training epoch on this machine, from 50 timed steps
    trainer = Trainer(config, corpus)
    trainer.train_epoch()
    trainer.advance_epoch()
    _, seconds = timed(trainer.train_epoch)
    epoch_s = seconds / trainer.steps_per_epoch * trainer.total_windows
    share = rows[f"k={args.k}"]["engine_s"] / epoch_s
    targets = {"full_speedup": 3.0, "k_speedup": 50.0, "agreement": 1e-4, "epoch_share": 0.02}
    passed = {name: rows["full"][f"speedup_vs_{name}"] >= 3.0 and rows[f"k={args.k}"][f"speedup_vs_{name}"] >= 50.0
              and max(r[f"max_abs_diff_vs_{name}"] for r in rows.values()) <= 1e-4 and share <= 0.02
              for name in references}
    path = write_result("lyapunov_speed", {
        "command": "python benchmarks/lyapunov_speed.py " + " ".join(sys.argv[1:]),
        "samples": args.samples, "steps": args.steps, "reference_samples": ref_samples, "rows": rows,
        "references": {n: {k: v for k, v in r.items() if k != "exponents"} for n, r in references.items()},
        "ptb_small_epoch_s": epoch_s, "k_share_of_epoch": share, "targets": targets, "passed": passed,
        "model": args.ckpt or "ptb-small, random init (seed 0)",
    })
    print(f"ptb-small epoch here: {epoch_s:.1f}s; k={args.k} spectrum = {share:.2%} of it")
    print("targets (full >= 3x, k >= 50x, |diff| <= 1e-4, <= 2% of an epoch): "
          + ", ".join(f"vs {n} {'PASS' if ok else 'FAIL'}" for n, ok in passed.items()) + f"; {path}")


if __name__ == "__main__":
    main()
