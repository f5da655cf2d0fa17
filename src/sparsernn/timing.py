"""Side-by-side inference timing of models that read the same tokens (what compaction buys)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def inference_seconds(models: dict[str, nn.Module], vocab_size: int, batch: int = 10, steps: int = 30,
                      repeats: int = 9, seed: int = 0) -> dict[str, float]:
    """Median wall time of one forward pass over ``steps`` x ``batch`` tokens per model, the models run
    interleaved (so that a slower moment of the machine hits them all alike), after one warm-up each.
    As in the ISS paper's Table 1: batch 10, 30 unrolled steps, ``torch.inference_mode``."""
    tokens = torch.randint(0, vocab_size, (steps, batch), generator=torch.Generator().manual_seed(seed))
    times: dict[str, list[float]] = {name: [] for name in models}

    def once(model: nn.Module) -> float:
        device = next(model.parameters()).device
        x = tokens.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            model(x, model.init_state(batch)) if hasattr(model, "init_state") else model(x)  # LM or tagger
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    was_training = {name: model.training for name, model in models.items()}
    for model in models.values():
        model.eval()
        once(model)
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(once(model))
    for name, model in models.items():
        model.train(was_training[name])
    return {name: statistics.median(values) for name, values in times.items()}
