"""Training-step time of sparsernn's RHN layer against a plain eager RHN written here, side by side.

    python benchmarks/rhn_speed.py [--repeats 5]
    python benchmarks/rhn_speed.py --report-only

One training step of the recurrent layer: forward over a window (batch 20, 35 steps, recurrence
depth 10), a loss on every output, backward to every weight. Widths: the ``rhn-cpu`` preset's 200 and
the paper's 830. Implementations, run interleaved (median of ``--repeats`` after a warm-up):

  plain eager      the textbook step: per micro-layer separate products for H and T, the input
                   projected inside the loop, autograd through everything (written below)
  sparsernn loop   sparsernn's layer with ``fast=False``: gates in one product per micro-layer, the
                   window's input projection in one product, autograd through the loop
  sparsernn        the default: the same forward without an autograd graph, gate values and states
                   written in place (four operations per micro-layer), and a hand-written backward
                   (three per micro-layer) whose weight gradients are one product per micro-layer
                   over the window

Acceptance (issue 13): sparsernn at least 2x faster than plain eager at both widths on CPU.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, parse_study, read_result, study_parser, write_result  # noqa: E402

from sparsernn.models.cells.rhn import RecurrentHighway  # noqa: E402

NAME = "rhn_speed"
BATCH, STEPS, DEPTH = 20, 35, 10


class PlainRHN(torch.nn.Module):
    """An RHN layer as one would first write it (coupled carry)."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.w_h = torch.nn.Parameter(torch.empty(width, width))
        self.w_t = torch.nn.Parameter(torch.empty(width, width))
        self.r_h = torch.nn.ParameterList(torch.nn.Parameter(torch.empty(width, width)) for _ in range(depth))
        self.r_t = torch.nn.ParameterList(torch.nn.Parameter(torch.empty(width, width)) for _ in range(depth))
        self.b_h = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(width)) for _ in range(depth))
        self.b_t = torch.nn.ParameterList(torch.nn.Parameter(torch.full((width,), -2.0)) for _ in range(depth))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        outputs = []
        for t in range(x.shape[0]):
            for layer in range(len(self.r_h)):
                pre_h = s @ self.r_h[layer].T + self.b_h[layer]
                pre_t = s @ self.r_t[layer].T + self.b_t[layer]
                if layer == 0:
                    pre_h = pre_h + x[t] @ self.w_h.T
                    pre_t = pre_t + x[t] @ self.w_t.T
                h, gate = torch.tanh(pre_h), torch.sigmoid(pre_t)
                s = h * gate + s * (1 - gate)
            outputs.append(s)
        return torch.stack(outputs)


def copy_weights(ours: RecurrentHighway, plain: PlainRHN) -> None:
    """The same weights in both, so both compute the same step (checked before timing)."""
    w = ours.hidden_size
    with torch.no_grad():
        plain.w_h.copy_(ours.weight_ih[:w])
        plain.w_t.copy_(ours.weight_ih[w:])
        for layer, (weight, bias) in enumerate(zip(ours.weights(), ours.biases())):
            plain.r_h[layer].copy_(weight[:w])
            plain.r_t[layer].copy_(weight[w:])
            plain.b_h[layer].copy_(bias[:w])
            plain.b_t[layer].copy_(bias[w:])


def measure(width: int, repeats: int) -> dict:
    torch.manual_seed(0)
    ours = RecurrentHighway(width, width, depth=DEPTH)
    loop = RecurrentHighway(width, width, depth=DEPTH, fast=False)
    loop.load_state_dict(ours.state_dict())
    plain = PlainRHN(width, DEPTH)
    copy_weights(ours, plain)
    x = torch.randn(STEPS, BATCH, width)
    state = torch.zeros(1, BATCH, width)
    target = torch.randn(STEPS, BATCH, width)
    with torch.no_grad():
        agree = float((ours(x, state)[0] - plain(x, state[0])).abs().max())

    def step(name: str) -> float:
        start = time.perf_counter()
        if name == "plain eager":
            out = plain(x, state[0])
            plain.zero_grad()
        else:
            module = ours if name == "sparsernn" else loop
            out = module(x, state)[0]
            module.zero_grad()
        ((out - target) ** 2).mean().backward()
        return time.perf_counter() - start

    names = ["plain eager", "sparsernn loop", "sparsernn"]
    for name in names:
        step(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            times[name].append(step(name))
    median = {name: statistics.median(values) for name, values in times.items()}
    return {"width": width, "depth": DEPTH, "max_output_difference": agree,
            "seconds": median, "speedup_over_plain": {n: median["plain eager"] / median[n] for n in names},
            "profile": {name: profile(step, name) for name in ("plain eager", "sparsernn")}}


def profile(step, name: str) -> dict:
    """Where one step's CPU time goes: the matrix products (the same arithmetic in every implementation)
    against everything else (elementwise operations, copies, dispatch)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step(name)
    events = prof.key_averages()
    products = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    total = sum(e.self_cpu_time_total for e in events)
    return {"matrix_product_seconds": products / 1e6, "profiled_seconds": total / 1e6,
            "operations": sum(e.count for e in events if e.key.startswith("aten::") and e.key not in (
                "aten::mm", "aten::addmm", "aten::bmm"))}


def report(result: dict) -> None:
    print(f"RHN training step (forward + backward), batch {result['batch']}, {result['steps']} steps, depth "
          f"{result['depth']}, median of {result['repeats']} interleaved, torch threads {result['machine']['torch_threads']}")
    print(f"{'width':>6s} {'plain eager s':>14s} {'sparsernn loop s':>17s} {'sparsernn s':>12s} {'speed-up':>9s}")
    for row in result["rows"]:
        s = row["seconds"]
        print(f"{row['width']:6d} {s['plain eager']:14.3f} {s['sparsernn loop']:17.3f} {s['sparsernn']:12.3f} "
              f"{row['speedup_over_plain']['sparsernn']:8.2f}x")
    for row in result["rows"]:
        for name, p in row.get("profile", {}).items():
            print(f"  width {row['width']}, {name} (profiled step): matrix products {p['matrix_product_seconds']:.3f} s "
                  f"of {p['profiled_seconds']:.3f} s; {p['operations']} other aten calls")
        if "profile" in row:
            bound = row["seconds"]["plain eager"] / row["profile"]["sparsernn"]["matrix_product_seconds"]
            print(f"  width {row['width']}: plain eager time / sparsernn's matrix products alone = {bound:.2f}x "
                  "(the speed-up if every other cost were zero)")
    print(f"{'PASS' if result['passed'] else 'FAIL'} (sparsernn >= {result['target']}x faster than plain eager "
          "at every width)")


def main() -> None:
    parser = study_parser(__doc__, data_dir=False)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--widths", default="200,830")
    args = parse_study(parser, NAME, report)
    if args is None:
        return
    rows = [measure(int(w), args.repeats) for w in args.widths.split(",")]
    target = 2.0
    write_result(NAME, {"command": command_line(), "batch": BATCH,
                        "steps": STEPS, "depth": DEPTH, "repeats": args.repeats, "rows": rows, "target": target,
                        "passed": all(r["speedup_over_plain"]["sparsernn"] >= target for r in rows)})
    report(read_result(NAME))


if __name__ == "__main__":
    main()
