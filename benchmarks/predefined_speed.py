"""Block-sparse LSTM layer vs its masked dense form vs the dense layer of the same parameter count.

    python benchmarks/predefined_speed.py [--repeats 5]
    python benchmarks/predefined_speed.py --report-only

Demeester et al.'s example: a block-sparse layer of 1725 units in N = 3 segments over input windows
of gamma = 0.555 (the parameters of a dense 1150 x 1150 layer, ``sparsernn match``), against the same
layer as one masked dense ``nn.LSTM``, and against the dense 1150-unit layer. One training step each
(batch 20, 35 steps, forward and backward), interleaved, median of ``--repeats``. Memory: bytes of
parameters, their gradients, buffers (the masks) and the activations autograd saves for backward
(counted with saved-tensor hooks, each storage once); on CUDA also the allocator's peak.
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

from sparsernn.models.cells.block_lstm import BlockSparseLSTM, MaskedBlockLSTM, match_gamma  # noqa: E402

NAME = "predefined_speed"
BATCH, STEPS = 20, 35
DENSE, WIDE, SEGMENTS = 1150, 1725, 3


def saved_bytes(module: nn.Module, x: torch.Tensor, state) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward pass (each storage once)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = module(x, state)
    del out
    return sum(seen.values())


def static_bytes(module: nn.Module) -> int:
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return 2 * params + buffers  # weights and their gradients, and the masks


def measure(repeats: int, device: torch.device) -> dict:
    gamma, difference = match_gamma(DENSE, DENSE, WIDE, WIDE, SEGMENTS)
    torch.manual_seed(0)
    layers = {
        f"block-sparse {WIDE} (N={SEGMENTS}, gamma={gamma:.3f}), parallel": BlockSparseLSTM(WIDE, WIDE, SEGMENTS, gamma),
        f"block-sparse {WIDE}, masked dense form": MaskedBlockLSTM(WIDE, WIDE, SEGMENTS, gamma),
        f"dense {DENSE}": nn.LSTM(DENSE, DENSE),
    }
    layers = {name: layer.to(device) for name, layer in layers.items()}
    inputs = {name: torch.randn(STEPS, BATCH, layer.input_size, device=device) for name, layer in layers.items()}

    def state(layer):
        zeros = torch.zeros(1, BATCH, layer.hidden_size, device=device)
        return zeros, zeros.clone()

    def step(name: str) -> float:
        layer = layers[name]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out, _ = layer(inputs[name], state(layer))
        out.pow(2).mean().backward()
        layer.zero_grad(set_to_none=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in layers:
        step(name)
    times: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(repeats):
        for name in layers:
            times[name].append(step(name))
    rows = []
    for name, layer in layers.items():
        row = {"layer": name, "parameters": sum(p.numel() for p in layer.parameters()),
               "seconds": statistics.median(times[name]),
               "memory_bytes": static_bytes(layer) + saved_bytes(layer, inputs[name], state(layer))}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            step(name)
            row["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
        rows.append(row)
    dense_s = rows[-1]["seconds"]
    for row in rows:
        row["time_vs_dense"] = row["seconds"] / dense_s
    return {"gamma": gamma, "parameter_difference": difference, "rows": rows}


def report(result: dict) -> None:
    print(f"one training step, batch {result['batch']}, {result['steps']} steps, {result['device']}, median of "
          f"{result['repeats']} interleaved; gamma {result['gamma']:.4f} (parameters {result['parameter_difference']:+,} "
          "vs the dense layer)")
    print(f"{'layer':50s} {'parameters':>11s} {'ms':>9s} {'x dense':>8s} {'memory MB':>10s}")
    for row in result["rows"]:
        print(f"{row['layer']:50s} {row['parameters']:11,d} {1000 * row['seconds']:9.1f} "
              f"{row['time_vs_dense']:8.2f} {row['memory_bytes'] / 2**20:10.1f}")


def main() -> None:
    parser = study_parser(__doc__, data_dir=False)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    result = measure(args.repeats, device)
    write_result(NAME, {"command": command_line(),
                        "device": str(device), "batch": BATCH, "steps": STEPS, "repeats": args.repeats, **result})
    report(read_result(NAME))


if __name__ == "__main__":
    main()
