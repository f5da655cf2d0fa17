"""Training throughput of sparsernn's Trainer vs a minimal plain-PyTorch loop of the same model.

    python benchmarks/train_throughput.py [--data-dir DIR] [--steps 50] [--rounds 5] [--device auto]

Both train ptb-small (2x200 LSTM, vocab 10k, batch 20, bptt 20, SGD, clip) on the same PTB windows,
interleaved round by round in one process, so machine load affects both alike. Acceptance: the
median per-round ratio sparsernn/plain of tokens/s is >= 0.95. Writes results/train_throughput.json.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, study_parser, write_result  # noqa: E402

from sparsernn.config import resolve_config  # noqa: E402
from sparsernn.data import bptt_window, load_corpus, resolve_lm_dir  # noqa: E402
from sparsernn.train import Trainer  # noqa: E402

TARGET_RATIO = 0.95


class PlainLM(nn.Module):
    """The model as anyone would write it: embedding, one 2-layer nn.LSTM, linear decoder."""

    def __init__(self, vocab: int, hidden: int, layers: int, init: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab)
        for p in self.parameters():
            nn.init.uniform_(p, -init, init)

    def forward(self, x, state):
        out, state = self.lstm(self.embedding(x), state)
        return self.decoder(out), state


def plain_loop(model, optimizer, data, bptt, clip, first_window, steps, state):
    """The textbook truncated-BPTT loop (as in PyTorch's word_language_model example)."""
    model.train()
    total = 0.0
    for index in range(first_window, first_window + steps):
        x, y = bptt_window(data, index, bptt)
        state = tuple(s.detach() for s in state)
        optimizer.zero_grad()
        logits, state = model(x, state)
        loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        total += loss.item()
    return state, total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = study_parser(__doc__, stored=False)
    parser.add_argument("--steps", type=int, default=50, help="training steps per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    corpus_dir, note = resolve_lm_dir(args.data_dir)
    if note:
        sys.exit(f"train_throughput.py measures ptb-small on PTB: {note}")
    corpus = load_corpus(corpus_dir)
    config = resolve_config("ptb-small", overrides={
        "data.epoch_tokens": args.steps * 20 * 20, "train.device": args.device, "train.log_interval": 10**9})
    trainer = Trainer(config, corpus)
    device = trainer.device
    torch.manual_seed(0)
    plain = PlainLM(len(corpus.vocab), 200, 2, 0.1).to(device)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=config.optim.lr)
    state = tuple(torch.zeros(2, 20, 200, device=device) for _ in range(2))
    bptt, clip = config.data.bptt, config.optim.clip
    tokens = args.steps * config.data.batch_size * bptt

    # warm-up both (allocator, kernels), then interleave timed rounds
    trainer.train_epoch()
    trainer.advance_epoch()
    state, _ = plain_loop(plain, plain_opt, trainer.task.train_data, bptt, clip, 0, args.steps, state)
    rows = []
    for round_ in range(args.rounds):
        sync(device)
        start = time.perf_counter()
        trainer.train_epoch()
        sync(device)
        ours = time.perf_counter() - start
        trainer.advance_epoch()
        start = time.perf_counter()
        state, _ = plain_loop(plain, plain_opt, trainer.task.train_data, bptt, clip,
                              (round_ + 1) * args.steps, args.steps, state)
        sync(device)
        theirs = time.perf_counter() - start
        rows.append({"sparsernn_tok_s": tokens / ours, "plain_tok_s": tokens / theirs, "ratio": theirs / ours})
        print(f"round {round_ + 1}: sparsernn {tokens / ours:9,.0f} tok/s | plain {tokens / theirs:9,.0f} tok/s | "
              f"ratio {theirs / ours:.3f}")
    ratio = statistics.median(r["ratio"] for r in rows)
    summary = {
        "sparsernn_tok_s": statistics.median(r["sparsernn_tok_s"] for r in rows),
        "plain_tok_s": statistics.median(r["plain_tok_s"] for r in rows),
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "passed": ratio >= TARGET_RATIO,
    }
    path = write_result("train_throughput", {
        "command": command_line(),
        "device": str(device), "steps_per_round": args.steps, "rounds": rows, **summary,
    })
    print(f"median ratio sparsernn/plain = {ratio:.3f} (target >= {TARGET_RATIO}: "
          f"{'PASS' if summary['passed'] else 'FAIL'}); {path}")


if __name__ == "__main__":
    main()
