"""Inference speed of ISS-compacted LSTMs vs the dense 2x1500 PTB model, and vs unstructured CSR sparsity.

    python benchmarks/iss_inference.py [--repeats 15] [--device auto]
    python benchmarks/iss_inference.py --report-only    # print the stored result again, no timing

As in the ISS paper (Wen et al. 2018, Table 1): batch 10, 30 unrolled steps, embedding + LSTMs +
decoder, vocabulary 10k, embedding 1500. Models: dense (1500, 1500); compacted (373, 315) and
(381, 535), plain nn.LSTM modules; and an unstructured-sparse model with the dense shapes and the
same number of non-zero LSTM+decoder weights as (373, 315), run with torch.sparse CSR matrices (a
step-by-step cell, since no fused kernel takes sparse weights). All run interleaved, in
``torch.inference_mode``, median of ``--repeats``. Acceptance: each compacted model's measured
speed-up >= 0.9x its mult-add reduction (paper: 10.59x measured for 7.48x). Writes
results/iss_inference.json.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, read_result, study_parser, write_result  # noqa: E402

from sparsernn.config import ModelConfig  # noqa: E402
from sparsernn.models import RNNLanguageModel, count_parameters  # noqa: E402
from sparsernn.models.cells.lstm import lstm_update  # noqa: E402
from sparsernn.models.stack import multiply_adds  # noqa: E402

VOCAB, EMBED, BATCH, STEPS = 10000, 1500, 10, 30
PAPER = {"speedup": 10.59, "mult_add_reduction": 7.48}  # Wen et al. (2018), Table 1, ISS (373, 315) on CPU


def model_multiply_adds(model: RNNLanguageModel) -> int:
    """Per token: the recurrent layers and the decoder (the embedding is a lookup)."""
    return multiply_adds(model.recurrent_stack(), model.decoder.in_features, model.decoder.out_features)


def report(result: dict) -> None:
    """Print every figure of an iss_inference result."""
    print(f"batch {result['batch']}, {result['steps']} steps, median of {result['repeats']} interleaved runs "
          f"on {result['device']}")
    print(f"{'model':38s} {'parameters':>11s} {'ms':>9s} {'speed-up':>9s} {'mult-add red.':>14s} {'ratio':>6s}")
    for r in result["rows"]:
        print(f"{r['model']:38s} {r['parameters'] / 1e6:10.1f}M {r['ms']:9.1f} {r['speedup']:8.2f}x "
              f"{r['mult_add_reduction']:13.2f}x {r['speedup_over_reduction']:6.2f}")
    paper = result["paper"]
    print(f"paper (ISS (373, 315)): {paper['speedup']}x measured for {paper['mult_add_reduction']}x mult-add reduction")
    print(f"{'PASS' if result['passed'] else 'FAIL'} (compacted speed-up >= 0.9x mult-add reduction)")


class CsrLSTMLM(nn.Module):
    """The dense model's shapes with random unstructured sparsity, weights as CSR, one step at a time."""

    def __init__(self, dense: RNNLanguageModel, density: float, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.embedding = dense.embedding

        def sparse(w: torch.Tensor) -> torch.Tensor:
            keep = torch.rand(w.shape, generator=generator) < density
            return (w.detach() * keep).to_sparse_csr()

        self.layers = [(sparse(l.weight_ih_l0), sparse(l.weight_hh_l0), (l.bias_ih_l0 + l.bias_hh_l0).detach()[:, None])
                       for l in dense.layers]
        self.decoder_weight = sparse(dense.decoder.weight)
        self.decoder_bias = dense.decoder.bias.detach()[:, None]
        self.nonzero = sum(w._nnz() for layer in self.layers for w in layer[:2]) + self.decoder_weight._nnz()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x_all = self.embedding(tokens)  # (T, B, E)
        states = [(x_all.new_zeros(w_hh.shape[1], tokens.shape[1]),) * 2 for _, w_hh, _ in self.layers]
        outputs = []
        for t in range(tokens.shape[0]):
            x = x_all[t].T  # (E, B): column-major batch so W @ x is a sparse-dense product
            for n, (w_ih, w_hh, bias) in enumerate(self.layers):
                h, c = states[n]
                h, c = lstm_update(torch.sparse.mm(w_ih, x) + torch.sparse.mm(w_hh, h) + bias, c, dim=0)
                states[n] = (h, c)
                x = h
            outputs.append(torch.sparse.mm(self.decoder_weight, x) + self.decoder_bias)
        return torch.stack(outputs)


def lm(sizes: list[int]) -> RNNLanguageModel:
    return RNNLanguageModel(ModelConfig(hidden_sizes=sizes, embedding_size=EMBED, init_range=0.04), VOCAB)


def main() -> None:
    parser = study_parser(__doc__, data_dir=False)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="auto")
    args = parse_study(parser, "iss_inference", report)
    if args is None:
        return
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(0)
    configs = {"dense (1500, 1500)": [1500, 1500], "ISS (373, 315)": [373, 315], "ISS (381, 535)": [381, 535]}
    models = {name: lm(sizes).to(device).eval() for name, sizes in configs.items()}
    dense_weights = model_multiply_adds(models["dense (1500, 1500)"])
    csr_density = model_multiply_adds(models["ISS (373, 315)"]) / dense_weights  # same non-zero LSTM+decoder weights
    models["CSR, same non-zeros as (373, 315)"] = CsrLSTMLM(models["dense (1500, 1500)"].cpu(), csr_density)
    models["dense (1500, 1500)"].to(device)
    tokens = torch.randint(0, VOCAB, (STEPS, BATCH))

    def run(name: str) -> float:
        model = models[name]
        on = device if not isinstance(model, CsrLSTMLM) else torch.device("cpu")
        x = tokens.to(on)
        if on.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            if isinstance(model, CsrLSTMLM):
                model(x)
            else:
                model(x, model.init_state(BATCH))
        if on.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in models:  # warm-up
        run(name)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name in models:
            times[name].append(run(name))
    dense_s = statistics.median(times["dense (1500, 1500)"])
    rows = []
    for name, model in models.items():
        sizes = configs.get(name, [1500, 1500])
        reduction = dense_weights / (model_multiply_adds(model) if name in configs else model.nonzero)
        median = statistics.median(times[name])
        rows.append({"model": name, "hidden": sizes, "ms": 1000 * median, "speedup": dense_s / median,
                     "mult_add_reduction": reduction, "speedup_over_reduction": dense_s / median / reduction,
                     "parameters": count_parameters(model) if name in configs else model.nonzero})
    compacted = [r for r in rows if r["model"].startswith("ISS")]
    passed = all(r["speedup_over_reduction"] >= 0.9 for r in compacted)
    path = write_result("iss_inference", {
        "command": command_line(), "device": str(device),
        "batch": BATCH, "steps": STEPS, "repeats": args.repeats, "rows": rows, "passed": passed,
        "note": "CSR model runs on the CPU (step-by-step sparse products)", "paper": PAPER,
    })
    report(read_result("iss_inference"))
    print(path)


if __name__ == "__main__":
    main()
