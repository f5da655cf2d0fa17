"""The deployed model: ptb-small size, dense vs ISS-compacted vs unstructured vs block-sparse, float and int8,
in PyTorch eager and in ONNX Runtime, at 1 and 2 threads.

    python benchmarks/deploy.py --data-dir ../shared/data/ptb [--epochs 6] [--epoch-tokens 200000] [--repeats 7]
    python benchmarks/deploy.py --train-only     # train the six models (resumable), measure nothing
    python benchmarks/deploy.py --report-only    # print the stored result again

Six ptb-small models (2x200 LSTM, vocabulary 10k) are trained here on one shortened schedule (``--epochs`` of
``--epoch-tokens`` tokens, lr 20 halved from epoch 4), each skipped when its run already finished: dense;
ISS steered to 0.5 / 0.25 / 0.125 of the recurrent multiply-adds, then compacted; unstructured GMP at
density 0.33 of the recurrent and decoder weights (run as masked dense weights, and as CSR matrices
step by step in eager, which no exporter takes); block-sparse LSTM (3 segments, gamma 0.555). Every ISS
model and the dense one are also quantized to dynamic int8 (PyTorch's ``quantize_dynamic`` in eager,
ONNX Runtime's on the exported file). Columns: validation perplexity (eager, and ONNX Runtime for the
int8 files, whose arithmetic differs), parameters, file size, latency per token at batch 1 (one
token per call, state carried: the interactive case) and tokens/s at batch 20 (windows of 35).
Timings are interleaved, median of ``--repeats``, and reported as ratios to the dense float model in
eager at the same thread count. Writes results/deploy.json.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, ptb_corpus, study_parser, train_run, write_result  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.deploy import (OnnxModel, export_int8, export_model, quantizable_modules, quantize_model,  # noqa: E402
                              weight_bytes)
from sparsernn.models.cells.lstm import lstm_update  # noqa: E402
from sparsernn.runs import BEST, load_model  # noqa: E402
from sparsernn.sparsity.iss import compact  # noqa: E402
from sparsernn.tasks import build_task  # noqa: E402

NAME = "deploy"
# name -> overrides of ptb-small; ISS fractions are of the recurrent multiply-adds
MODELS = {
    "dense": {},
    "iss-0.5": {"sparsity.method": "iss", "sparsity.target_multiply_adds": 0.5},
    "iss-0.25": {"sparsity.method": "iss", "sparsity.target_multiply_adds": 0.25},
    "iss-0.125": {"sparsity.method": "iss", "sparsity.target_multiply_adds": 0.125},
    "gmp-0.33": {"sparsity.method": "gmp", "sparsity.density": 0.33, "sparsity.prunable": ["recurrent", "decoder"]},
    "block-sparse": {"model.cell": "block_lstm", "model.segments": [3, 3], "model.gamma": [0.555, 0.555]},
}


def train_all(args, corpus, corpus_dir) -> dict[str, Path]:
    """Train (or find finished) every model; their run directories by name."""
    common = {"train.epochs": args.epochs, "data.epoch_tokens": args.epoch_tokens, "optim.decay_start_epoch": 4,
              "train.checkpoint_every": 500, "train.log_interval": 250, "data.dir": str(Path(corpus_dir).resolve())}
    runs = {}
    for name, overrides in MODELS.items():
        runs[name] = Path(args.out) / name
        train_run(resolve_config("ptb-small", overrides={**common, **overrides}), corpus, runs[name])
    return runs


class CsrLM(nn.Module):
    """An LSTM LM whose zero weights are skipped: each recurrent and decoder matrix as a CSR tensor, one
    step at a time (no fused kernel takes sparse weights), the state carried as the model carries it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        self.embedding = model.embedding
        self.layers = [(layer.weight_ih_l0.detach().to_sparse_csr(), layer.weight_hh_l0.detach().to_sparse_csr(),
                        (layer.bias_ih_l0 + layer.bias_hh_l0).detach()[:, None]) for layer in model.layers]
        self.decoder = (model.decoder.weight.detach().to_sparse_csr(), model.decoder.bias.detach()[:, None])
        self.init_state = model.init_state

    def stored_bytes(self) -> int:
        """Values, column indices and row pointers of every CSR matrix, the rest dense float32."""
        matrices = [w for layer in self.layers for w in layer[:2]] + [self.decoder[0]]
        csr = sum(m.values().numel() * 4 + m.col_indices().numel() * 8 + m.crow_indices().numel() * 8 for m in matrices)
        dense = self.embedding.weight.numel() * 4 + sum(b.numel() * 4 for *_, b in self.layers)
        return csr + dense + self.decoder[1].numel() * 4

    def forward(self, tokens: torch.Tensor, state):
        inputs = self.embedding(tokens)
        state = [(h[0].T, c[0].T) for h, c in state]  # (hidden, batch): W @ x with x column-major
        logits = []
        for x in inputs:
            x = x.T
            for n, (w_ih, w_hh, bias) in enumerate(self.layers):
                h, c = lstm_update(torch.sparse.mm(w_ih, x) + torch.sparse.mm(w_hh, state[n][0]) + bias, state[n][1], dim=0)
                state[n] = (h, c)
                x = h
            logits.append((torch.sparse.mm(self.decoder[0], x) + self.decoder[1]).T)
        return torch.stack(logits), [(h.T[None], c.T[None]) for h, c in state]


def variants(name: str, model: nn.Module, directory: Path) -> dict[str, dict]:
    """The deployed forms of one trained model: ``{row: {"eager": module, "onnx": path, ...}}``."""
    vocab = model.decoder.out_features
    float_file = directory / f"{name}.onnx"
    export_model(model, float_file, vocab)
    rows = {name: {"eager": model, "onnx": float_file, "bytes": float_file.stat().st_size,
                   "hidden_sizes": list(model.hidden_sizes), "parameters": sum(p.numel() for p in model.parameters()),
                   "nonzero": sum(int((p != 0).sum()) for p in model.parameters())}}
    if name == "dense" or name.startswith("iss"):
        int8_file = directory / f"{name}-int8.onnx"
        export_int8(model, int8_file, vocab)
        rows[f"{name} int8"] = {**rows[name], "eager": quantize_model(model), "onnx": int8_file,
                                "bytes": int8_file.stat().st_size,
                                "eager_bytes": weight_bytes(model, quantizable_modules(model))}
    if name.startswith("gmp"):
        csr = CsrLM(model)
        rows[f"{name} CSR"] = {**rows[name], "eager": csr, "onnx": None, "bytes": csr.stored_bytes()}
    return rows


def deployed_models(runs: dict[str, Path]) -> dict[str, dict]:
    """Every row of the table: trained models (ISS compacted) in each of their deployed forms."""
    directory = Path(tempfile.mkdtemp(prefix="sparsernn-deploy-"))  # removed by main once measured
    rows = {}
    for name, run in runs.items():
        model = load_model(run / BEST)[0]
        if name.startswith("iss"):
            model = compact(model).eval()
        rows.update(variants(name, model, directory))
    return rows


def latency(model, tokens: torch.Tensor) -> float:
    """Seconds per token at batch 1, one token per call with the state carried (generation's loop)."""
    state = model.init_state(1)
    start = time.perf_counter()
    with torch.inference_mode():
        for token in tokens:
            _, state = model(token.view(1, 1), state)
    return (time.perf_counter() - start) / len(tokens)


def throughput(model, tokens: torch.Tensor) -> float:
    """Tokens per second for a ``(sequence, batch)`` window from the initial state."""
    start = time.perf_counter()
    with torch.inference_mode():
        model(tokens, model.init_state(tokens.shape[1]))
    return tokens.numel() / (time.perf_counter() - start)


def timings(rows: dict[str, dict], threads: int, repeats: int) -> dict[str, dict[str, float]]:
    """Median latency and throughput of every row in eager and ONNX Runtime, all interleaved."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(threads)
    vocab = rows["dense"]["eager"].decoder.out_features
    single, window = torch.randint(0, vocab, (64,), generator=generator), torch.randint(0, vocab, (35, 20), generator=generator)
    runners = {}
    for name, row in rows.items():
        runners[(name, "eager")] = row["eager"]
        if row["onnx"] is not None:
            runners[(name, "onnx")] = OnnxModel(row["onnx"], threads=threads)
    samples: dict = {key: {"latency": [], "throughput": []} for key in runners}
    for key, runner in runners.items():  # warm-up
        latency(runner, single[:8]), throughput(runner, window)
    for _ in range(repeats):
        for key, runner in runners.items():
            samples[key]["latency"].append(latency(runner, single))
            samples[key]["throughput"].append(throughput(runner, window))
    return {f"{name}|{runtime}": {k: statistics.median(v) for k, v in measured.items()}
            for (name, runtime), measured in samples.items()}


def perplexities(rows: dict[str, dict], task) -> dict[str, dict[str, float]]:
    """Validation perplexity of every row: eager, and ONNX Runtime (which computes int8 its own way)."""
    result = {}
    for name, row in rows.items():
        result[name] = {"eager": task.evaluate(row["eager"], "valid")["ppl"]}
        if row["onnx"] is not None:
            result[name]["onnx"] = task.evaluate(OnnxModel(row["onnx"]), "valid")["ppl"]
    return result


def table(rows: dict[str, dict], ppl: dict, timed: dict) -> dict[str, dict]:
    """The stored rows: sizes, perplexities, and speed as ratios to dense float eager per thread count."""
    stored = {}
    for name, row in rows.items():
        timing = {}
        for threads, measured in timed.items():
            base = measured["dense|eager"]
            timing[str(threads)] = {
                f"{runtime}_{what}": ratio
                for runtime in ("eager", "onnx") if f"{name}|{runtime}" in measured
                for what, ratio in (
                    ("latency_ratio", base["latency"] / measured[f"{name}|{runtime}"]["latency"]),
                    ("throughput_ratio", measured[f"{name}|{runtime}"]["throughput"] / base["throughput"]),
                    ("latency_ms", 1e3 * measured[f"{name}|{runtime}"]["latency"]),
                    ("tokens_per_s", measured[f"{name}|{runtime}"]["throughput"]))}
        stored[name] = {"val_ppl": ppl[name], "hidden_sizes": row["hidden_sizes"], "parameters": row["parameters"],
                        "nonzero": row["nonzero"],
                        "bytes": row["bytes"], **({"eager_bytes": row["eager_bytes"]} if "eager_bytes" in row else {}),
                        "timing": timing}
    return stored


def goals(rows: dict[str, dict]) -> list[dict]:
    """The issue's goals, as measured: ISS + int8 >= 15x dense at batch 1 for <= 2% perplexity over the
    compacted float model; ONNX Runtime at least as fast as eager for every row."""
    out = []
    for name in [n for n in rows if n.startswith("iss") and n.endswith("int8")]:
        float_ppl = rows[name.removesuffix(" int8")]["val_ppl"]["eager"]
        change = rows[name]["val_ppl"]["onnx"] / float_ppl - 1
        speed = max(rows[name]["timing"]["1"]["onnx_latency_ratio"], rows[name]["timing"]["1"]["eager_latency_ratio"])
        out.append({"goal": f"{name}: >= 15x dense at batch 1 (1 thread) with <= 2% perplexity over its float model",
                    "measured": f"{speed:.2f}x, perplexity {100 * change:+.2f}%", "met": speed >= 15 and change <= 0.02})
    slower = [f"{name} ({threads} thread{'s' * (threads != '1')}, {what})"
              for name, row in rows.items() for threads, t in row["timing"].items()
              for what in ("latency", "throughput") if f"onnx_{what}_ratio" in t
              and t[f"onnx_{what}_ratio"] < t[f"eager_{what}_ratio"]]
    out.append({"goal": "ONNX Runtime at least as fast as PyTorch eager for every row",
                "measured": "slower: " + ", ".join(slower) if slower else "faster or equal everywhere",
                "met": not slower})
    return out


def _ratio(t: dict, key: str) -> str:
    return f"{t[key]:8.2f}x" if key in t else f"{'-':>9s}"


def report(result: dict) -> None:
    """The table, as ratios to the dense float model in eager at the same thread count, and the goals."""
    print(f"ptb-small size (2x200 LSTM, vocabulary 10k); {result['schedule']}; median of {result['repeats']}")
    for threads in map(str, result["threads"]):
        print(f"\n{threads} thread(s), speed as a ratio to dense float in eager (latency: batch 1, one token per "
              "call; throughput: batch 20 x 35)")
        print(f"{'model':16s} {'widths':>8s} {'val ppl':>8s} {'ORT ppl':>8s} {'non-zero':>8s} {'MiB':>6s} "
              f"{'lat eager':>9s} {'lat ORT':>9s} {'thr eager':>9s} {'thr ORT':>9s}")
        for name, row in result["rows"].items():
            t = row["timing"][threads]
            onnx_ppl = row["val_ppl"].get("onnx")
            widths = ",".join(map(str, row["hidden_sizes"]))
            print(f"{name:16s} {widths:>8s} {row['val_ppl']['eager']:8.2f} {f'{onnx_ppl:.2f}' if onnx_ppl else '-':>8s} "
                  f"{row['nonzero'] / 1e6:7.2f}M {row['bytes'] / 2**20:6.2f} {_ratio(t, 'eager_latency_ratio')} "
                  f"{_ratio(t, 'onnx_latency_ratio')} {_ratio(t, 'eager_throughput_ratio')} "
                  f"{_ratio(t, 'onnx_throughput_ratio')}")
    print_threads_and_multiply_adds(result["rows"])
    for goal in result["goals"]:
        print(f"{'MET' if goal['met'] else 'NOT MET'}: {goal['goal']} ({goal['measured']})")


def lstm_multiply_adds(widths: list[int], embedding: int = 200, vocab: int = 10000) -> tuple[int, int]:
    """Per token, ``(recurrent layers, decoder)`` multiply-adds of an LSTM LM of these widths."""
    inputs = [embedding, *widths[:-1]]
    return sum(4 * h * (i + h) for i, h in zip(inputs, widths)), widths[-1] * vocab


def print_threads_and_multiply_adds(rows: dict[str, dict]) -> None:
    """Why the figures look as they do: what a second thread does at batch 1, and where the work is."""
    def slowdown(name: str, runtime: str) -> float:
        timing = rows[name]["timing"]
        return timing["2"][f"{runtime}_latency_ms"] / timing["1"][f"{runtime}_latency_ms"]

    print("\nbatch 1, 2 threads vs 1 (latency ratio, > 1: slower): " + ", ".join(
        f"{name} {runtime} {slowdown(name, runtime):.2f}" for name in ("dense", "iss-0.125 int8")
        for runtime in ("eager", "onnx")))
    dense_recurrent, dense_decoder = lstm_multiply_adds(rows["dense"]["hidden_sizes"])
    print(f"multiply-adds per token: dense {(dense_recurrent + dense_decoder) / 1e6:.2f}M, the decoder "
          f"{dense_decoder / (dense_recurrent + dense_decoder):.0%} of them; " + ", ".join(
              f"{name} {(dense_recurrent + dense_decoder) / sum(lstm_multiply_adds(rows[name]['hidden_sizes'])):.2f}x "
              "fewer" for name in rows if name.startswith("iss") and not name.endswith("int8")))


def main() -> None:
    parser = study_parser(__doc__, out="runs/deploy")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--epoch-tokens", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--train-only", action="store_true", help="train the models, measure nothing")
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    corpus, corpus_dir = ptb_corpus(args.data_dir, "deploy.py")
    runs = train_all(args, corpus, corpus_dir)
    if args.train_only:
        return
    config = resolve_config("ptb-small", overrides={"data.dir": str(Path(corpus_dir).resolve())})
    task = build_task(config, corpus, "cpu")
    rows = deployed_models(runs)
    try:
        ppl = perplexities(rows, task)
        timed = {threads: timings(rows, threads, args.repeats) for threads in (1, 2)}
    finally:
        shutil.rmtree(next(row["onnx"] for row in rows.values() if row["onnx"]).parent, ignore_errors=True)
    import onnxruntime

    result = {"command": command_line(), "repeats": args.repeats, "onnxruntime": onnxruntime.__version__,
              "schedule": f"{args.epochs} epochs of {args.epoch_tokens} tokens, lr 20 halved from epoch 4",
              "threads": [1, 2], "rows": table(rows, ppl, timed)}
    result["goals"] = goals(result["rows"])
    print(write_result(NAME, result))
    report(result)


if __name__ == "__main__":
    main()
