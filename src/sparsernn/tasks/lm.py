"""Word-level language modelling: truncated BPTT over contiguous streams, hidden state carried from
window to window, scored by perplexity."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsernn.config import ModelConfig, RunConfig
from sparsernn.data.lm import Corpus, batchify, bptt_window, num_windows
from sparsernn.dynamics.lyapunov import validation_sequences
from sparsernn.errors import CheckpointError, DataError
from sparsernn.models.cells import CELLS
from sparsernn.models.embedding import word_ranks
from sparsernn.models.lm import RNNLanguageModel, detach_state
from sparsernn.tasks.base import TASKS, Metric, Task


def evaluate_counts(model: nn.Module, batched: torch.Tensor, bptt: int) -> tuple[float, float]:
    """``(mean negative log-likelihood per token in nats, next-token accuracy by argmax)`` over a
    batchified split, state carried across windows."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=batched.device)
    correct = torch.zeros((), dtype=torch.int64, device=batched.device)
    tokens = 0
    with torch.inference_mode():
        state = model.init_state(batched.size(1))
        for index in range(num_windows(batched.size(0), bptt)):
            inputs, targets = bptt_window(batched, index, bptt)
            logits, state = model(inputs, state)
            total += nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
            ).double()
            correct += (logits.argmax(-1) == targets).sum()
            tokens += targets.numel()
    model.train(was_training)
    return total.item() / tokens, correct.item() / tokens


def evaluate(model: nn.Module, batched: torch.Tensor, bptt: int) -> float:
    """Mean negative log-likelihood per token (nats) over a batchified split, state carried across windows."""
    return evaluate_counts(model, batched, bptt)[0]


def perplexity(loss: float) -> float:
    """``exp(loss)``; inf where that overflows a float (a loss above ~709 nats per token)."""
    return math.exp(loss) if loss < 709.0 else math.inf


class LanguageModelling(Task):
    """``corpus`` batchified for ``config.data``. Training window ``(epoch, step)`` is window
    ``((epoch-1) * steps_per_epoch + step) mod total`` of the training streams, so epochs capped by
    ``data.epoch_tokens`` take successive slices; the hidden state is carried from one window to the
    next and starts from zero whenever the streams start over. Valid and test are batchified on first
    use: a run that never asks for test scores never reads the test split."""

    name = "lm"  # checkpoints of sparsernn <= 0.3 say "language-model" (an alias, settings.TASK_SETTINGS)
    description = "word-level language modelling (PTB), scored by perplexity"
    primary = Metric("ppl", "min")
    corpus = Corpus

    @classmethod
    def load_data(cls, config: RunConfig) -> tuple[Corpus, Path, str | None]:
        """PTB where ``data.dir`` (or the data roots) has it, else a generated corpus (the note says so)."""
        from sparsernn.data import load_corpus, resolve_lm_dir

        directory, note = resolve_lm_dir(config.data.dir)
        return load_corpus(directory), directory, note

    def __init__(self, config: RunConfig, corpus: Corpus, device: torch.device | str = "cpu") -> None:
        self.corpus = corpus
        self.data = config.data
        self.device = torch.device(device)
        train = corpus.train if self.data.train_tokens is None else corpus.train[: self.data.train_tokens]
        if train.numel() < self.data.batch_size * (self.data.bptt + 1):
            raise DataError(f"{corpus.directory}: {train.numel()} training tokens (data.train_tokens) are too few for "
                            f"{self.data.batch_size} streams of {self.data.bptt + 1} (data.batch_size, data.bptt)")
        self.train_data = batchify(train, self.data.batch_size).to(self.device)
        self._eval_data: dict[str, torch.Tensor] = {}
        self.total_windows = num_windows(self.train_data.size(0), self.data.bptt)
        per_epoch = self.total_windows
        if self.data.epoch_tokens is not None:
            per_epoch = min(per_epoch, -(-self.data.epoch_tokens // (self.data.batch_size * self.data.bptt)))
        self._steps_per_epoch = per_epoch
        self.carry: list | None = None  # hidden state carried into the next training window

    @property
    def steps_per_epoch(self) -> int:
        return self._steps_per_epoch

    def build_model(self, config: ModelConfig) -> RNNLanguageModel:
        ranks = None
        if config.embedding_density < 1.0:  # embedding lengths follow the training frequencies
            train = self.corpus.train[: self.data.train_tokens]  # the text it trains on (None: all)
            frequencies = torch.bincount(train, minlength=len(self.corpus.vocab))
            ranks = word_ranks(frequencies, config.embedding_sort, seed=0)
        return RNNLanguageModel(config, len(self.corpus.vocab), ranks)

    @classmethod
    def model_from_meta(cls, config: ModelConfig, meta: dict[str, Any]) -> RNNLanguageModel:
        return RNNLanguageModel(config, len(meta["vocab"]))

    def window_index(self, epoch: int, step: int) -> int:
        """Training window of step ``step`` in ``epoch``; capped epochs take successive slices."""
        return ((epoch - 1) * self.steps_per_epoch + step) % self.total_windows

    def training_loss(self, model: nn.Module, epoch: int, step: int) -> tuple[torch.Tensor, int]:
        index = self.window_index(epoch, step)
        if index == 0 or self.carry is None:  # the streams start over: nothing to carry
            self.carry = model.init_state(self.data.batch_size)
        inputs, targets = bptt_window(self.train_data, index, self.data.bptt)
        logits, carry = model(inputs, detach_state(self.carry))
        self.carry = carry
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return loss, targets.numel()

    def loss_metrics(self, loss: float) -> dict[str, float]:
        return {"ppl": perplexity(loss)}

    def split_tokens(self, split: str) -> torch.Tensor:
        """A split's token stream; "train" is the text the model trains on (``data.train_tokens``)."""
        return self.corpus.train[: self.data.train_tokens] if split == "train" else self.corpus.split(split)

    def check_split(self, split: str) -> None:
        tokens = self.split_tokens(split).numel()
        if tokens // self.data.eval_batch_size < 2:
            raise DataError(f"{self.corpus.directory}: the {split} split has {tokens} tokens, too few for "
                            f"{self.data.eval_batch_size} evaluation streams (data.eval_batch_size)")

    def from_version_0_1(self, resume: dict[str, Any], model: nn.Module) -> tuple[dict[str, Any], float | None]:
        # 0.1 kept the carried state as one flat list ((h, c) per LSTM layer) and the best validation loss
        flat, per_layer = resume["state"], CELLS[model.cell].state_tensors
        carry = [flat[i:i + per_layer] for i in range(0, len(flat), per_layer)]
        best = resume.get("best_val")
        return {"carry": carry}, None if best is None else perplexity(best)

    def split_data(self, split: str) -> torch.Tensor:
        if split not in self._eval_data:
            self._eval_data[split] = batchify(self.split_tokens(split), self.data.eval_batch_size).to(self.device)
        return self._eval_data[split]

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        # accuracy: next-token prediction by argmax; on "train" it measures memorisation ("learning to recite")
        loss, accuracy = evaluate_counts(model, self.split_data(split), self.data.bptt)
        return {"loss": loss, "ppl": perplexity(loss), "accuracy": accuracy}

    def lyapunov_inputs(self, samples: int, steps: int) -> torch.Tensor:
        return validation_sequences(self.corpus.valid, samples, steps)

    def meta(self) -> dict[str, Any]:
        return {"vocab": list(self.corpus.vocab.words)}

    def check_meta(self, meta: dict[str, Any], path: Path) -> None:
        if meta.get("vocab") != list(self.corpus.vocab.words):
            raise CheckpointError(f"{path}: its vocabulary ({len(meta.get('vocab') or [])} words) differs from the "
                                  f"corpus in {self.corpus.directory} ({len(self.corpus.vocab)} words)")

    def describe(self) -> str:
        return f"vocab {len(self.corpus.vocab)}, corpus {self.corpus.directory}"

    def state_dict(self) -> dict[str, Any]:
        # per layer, the list of its state tensors ([h, c] or [h]): the nesting keeps the layout
        return {"carry": None if self.carry is None else [list(s) if isinstance(s, tuple) else [s] for s in self.carry]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        carry = state["carry"]
        self.carry = None if carry is None else [
            tuple(t.to(self.device) for t in s) if len(s) > 1 else s[0].to(self.device) for s in carry]


TASKS.register(LanguageModelling)
