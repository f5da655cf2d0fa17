"""Your own LSTM language model, trained sparse with RigL and hyperpruned through your own loop.

The model is plain PyTorch (``nn.Embedding -> nn.LSTM(2 layers) -> nn.Linear``, attributes ``emb``,
``rnn``, ``fc``); the training loop is yours. The toolkit adds two calls:

- ``sparsernn.sparsify(model, optimizer, method="rigl", density=..., total_steps=...)`` makes the
  training sparse (call ``.step()`` after ``optimizer.step()``);
- ``sparsernn.hyperprune(objective, space, epochs=..., inputs=...)`` searches RigL's settings: each
  candidate trains through ``objective(candidate, epoch)`` (build at epoch 0, then one epoch per call,
  a checkpoint in ``candidate.directory`` so a killed search resumes), rounds rank the candidates by
  the distance of their Lyapunov spectra to a dense reference's within the validation loss's noise
  band, eliminate the farther half and insert new ones; the survivors train to the end.

    python examples/user_lstm_lm.py --small              # a generated corpus, about 20 s on one core
    python examples/user_lstm_lm.py --data-dir data/ptb  # PTB ($SPARSERNN_DATA/ptb or ../shared/data/ptb
                                                         # by default)

Rerun with the same ``--out`` to continue a stopped search. The last line printed is the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import sparsernn
from sparsernn.data import batchify, bptt_windows, generate_corpus, load_corpus, resolve_lm_dir
from sparsernn.data.lm import Corpus
from sparsernn.search.objective import Candidate


@dataclass(frozen=True)
class Size:
    emb: int
    hidden: int
    batch: int
    bptt: int
    windows: int | None  # training windows per epoch (None: the whole training split)
    epochs: int
    n: int
    lr: float


SMALL = Size(emb=16, hidden=24, batch=8, bptt=12, windows=12, epochs=3, n=4, lr=2.0)
FULL = Size(emb=200, hidden=200, batch=20, bptt=35, windows=None, epochs=8, n=8, lr=20.0)
SPACE = {"density": 0.33, "fixed": {"method": "rigl", "death": "magnitude", "growth": "gradient"},
         "choices": {"init": ["uniform", "er"]}, "ranges": {"death_rate": {"low": 0.1, "high": 0.6}}}


class LSTMLM(nn.Module):
    """A user's language model: nothing in it knows about sparsernn."""

    def __init__(self, vocab: int, emb: int, hidden: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, num_layers=2)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, B) token ids -> (T, B, vocab) logits
        return self.fc(self.rnn(self.emb(x))[0])


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def evaluate(model: nn.Module, batched: torch.Tensor, bptt: int) -> float:
    """Mean validation loss per token (nats)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in bptt_windows(batched, bptt):
            total += float(loss_of(model, x, y)) * y.numel()
            count += y.numel()
    model.train()
    return total / count


class Loop:
    """The user's training: one candidate's model, optimizer and sparse training, epoch by epoch."""

    def __init__(self, corpus: Corpus, size: Size) -> None:
        self.size, self.vocab = size, len(corpus.vocab)
        self.train = batchify(corpus.train, size.batch)
        self.valid = batchify(corpus.valid, size.batch)
        windows = len(list(bptt_windows(self.train, size.bptt)))
        self.steps_per_epoch = min(windows, size.windows or windows)

    def build(self, candidate: Candidate) -> tuple[nn.Module, Any, Any]:
        """A new model (the same initial weights for every candidate), sparse unless it is the dense
        reference; restored from its checkpoint after a restart."""
        torch.manual_seed(0)
        model = LSTMLM(self.vocab, self.size.emb, self.size.hidden)
        opt = torch.optim.SGD(model.parameters(), lr=self.size.lr)
        sparse = None if candidate.dense else sparsernn.sparsify(
            model, opt, total_steps=self.size.epochs * self.steps_per_epoch, steps_per_epoch=self.steps_per_epoch,
            update_every=max(1, self.steps_per_epoch // 2), **candidate.sparsify_settings)
        checkpoint = candidate.directory / "checkpoint.pt"
        if candidate.epoch >= 0 and checkpoint.is_file():  # a restart: continue where it stopped
            saved = torch.load(checkpoint, weights_only=False)
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            if sparse is not None:
                sparse.load_state_dict(saved["sparse"])
        return model, opt, sparse

    def epoch(self, model: nn.Module, opt: Any, sparse: Any, seed: int) -> None:
        torch.manual_seed(seed)  # the epoch's own randomness: a resumed candidate trains as an uninterrupted one
        for step, (x, y) in enumerate(bptt_windows(self.train, self.size.bptt)):
            if step == self.steps_per_epoch:
                break
            opt.zero_grad()
            loss_of(model, x, y).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            opt.step()
            if sparse is not None:
                sparse.step()

    def objective(self, candidate: Candidate, epoch: int) -> tuple[nn.Module, float]:
        """hyperprune's contract: bring ``candidate`` to the end of ``epoch`` (0: as built), return its
        model and validation loss."""
        if candidate.state is None:
            candidate.state = self.build(candidate)
        model, opt, sparse = candidate.state
        if epoch > 0:
            self.epoch(model, opt, sparse, seed=epoch)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "sparse": sparse.state_dict() if sparse is not None else None},
                   candidate.directory / "checkpoint.pt")
        return model, evaluate(model, self.valid, self.size.bptt)


def corpus_for(args: argparse.Namespace) -> Corpus:
    """PTB (``--data-dir``, else where the toolkit looks for it), or a small generated corpus (``--small``)."""
    if args.small and args.data_dir is None:
        directory = Path(args.out) / "corpus"
        if not (directory / "train.txt").is_file():
            generate_corpus(directory, seed=0, sentences=(800, 100, 100))
        return load_corpus(directory)
    directory, note = resolve_lm_dir(args.data_dir)
    if note:
        print(note)
    return load_corpus(directory)


def density_of(model: nn.Module | None) -> float | None:
    """Fraction of nonzero weights in the embedding, the LSTM and the decoder (what sparsify masks)."""
    if model is None:
        return None
    weights = [p for name, p in model.named_parameters() if "weight" in name]
    return sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="a PTB-style corpus directory (train/valid/test files)")
    parser.add_argument("--small", action="store_true", help="a small model on a generated corpus (seconds)")
    parser.add_argument("--out", help="the search's directory (rerun with it to continue)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search's sampler")
    args = parser.parse_args(argv)
    args.out = args.out or tempfile.mkdtemp(prefix="user-lstm-lm-")
    started = time.perf_counter()
    size = SMALL if args.small else FULL
    corpus = corpus_for(args)
    loop = Loop(corpus, size)
    inputs = loop.valid[:40, :4]  # what model(inputs) takes: the spectrum is driven by 4 validation windows
    result = sparsernn.hyperprune(loop.objective, SPACE, epochs=size.epochs, inputs=inputs, n=size.n, e0=1,
                                  survivors=1 if args.small else 2, k=16, seed=args.seed, out=Path(args.out) / "search")
    for row in result.candidates:
        print(f"{row['name']:>7} {row['status']:<10} epoch {row['epoch']} best val loss "
              f"{row['best_val_score'] if row['best_val_score'] is not None else float('nan'):.4f} "
              f"{ {key.removeprefix('sparsity.'): value for key, value in row['params'].items()} }")
    summary = {"winner": result.winner, "params": result.params, "winner_val_loss": result.score,
               "winner_val_ppl": math.exp(result.score) if result.score is not None else None,
               "density": density_of(result.model), "best_seen": result.best_seen,
               "seconds": round(time.perf_counter() - started, 1), "out": args.out}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
