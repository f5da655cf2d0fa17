"""A user's GRU sentence classifier, made smaller with ISS: group Lasso, compact, Lyapunov spectrum.

The data set is made here: random token sequences whose class is whether the pattern ``[1, 2]`` (two
adjacent tokens) occurs. The model is written as a user writes it (``emb``, ``rnn``, ``fc``); sparsernn
finds its GRU by itself. Run ``python examples/gru_classifier.py --small`` (seconds on one core).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import sparsernn


class Classifier(nn.Module):
    def __init__(self, vocab: int, width: int, hidden: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.rnn = nn.GRU(width, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(self.emb(x))
        return self.fc(output[:, -1])


def make_data(n: int, length: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences and labels: 1 where the tokens 1 then 2 occur next to each other."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = ((x[:, :-1] == 1) & (x[:, 1:] == 2)).any(1).long()
    return x, y


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(small: bool = False) -> dict[str, float]:
    """Train with group Lasso, compact, measure; returns the printed numbers."""
    torch.manual_seed(0)
    n, steps, hidden = (512, 400, 32) if small else (4096, 1500, 64)
    x, y = make_data(n, 12, 6, seed=0)
    xt, yt = make_data(n // 2, 12, 6, seed=1)
    model = Classifier(6, 8, hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    lasso = sparsernn.group_lasso(model, optimizer, x[:4], lasso_lambda=1e-2)
    for step in range(steps):
        batch = torch.randint(0, n, (64,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
        lasso.step()
    model.eval()
    small_model = sparsernn.compact(model, x[:4])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    spectrum = sparsernn.lyapunov_spectrum(small_model, xt[:16], k=4)
    result = {"parameters_before": count(model), "parameters_after": count(small_model),
              "accuracy_before": accuracy(model, xt, yt), "accuracy_after": accuracy(small_model, xt, yt),
              "units_kept": lasso.kept()[0], "max_exponent": float(spectrum.exponents[0])}
    for key, value in result.items():
        print(f"{key}: {value}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="a seconds-long run (the test's size)")
    main(parser.parse_args().small)
