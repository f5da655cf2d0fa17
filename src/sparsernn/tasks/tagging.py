"""Sequence tagging (WSJ part-of-speech): batches of whole sentences, scored by token accuracy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsernn.config import ModelConfig, RunConfig
from sparsernn.data.conll import TaggedCorpus, pad_batch, word_id
from sparsernn.errors import CheckpointError, ConfigError, DataError, SparsernnError
from sparsernn.models.embedding import word_ranks
from sparsernn.models.tagger import SequenceTagger
from sparsernn.tasks.base import TASKS, Metric, Task

PAD_TAG = -100  # ignored by the loss and by accuracy


def accuracy_counts(logits: torch.Tensor, tags: torch.Tensor) -> tuple[int, int]:
    """``(correct, counted)`` over the real tokens of a padded batch (padding tagged ``PAD_TAG``)."""
    real = tags != PAD_TAG
    return int((logits.argmax(-1)[real] == tags[real]).sum()), int(real.sum())


class Tagging(Task):
    """``corpus`` in batches of ``data.batch_size`` sentences, shuffled per epoch with a seed that
    depends on ``(train.seed, epoch)`` only (so a resumed run sees the same batches)."""

    name = "tagging"  # checkpoints of sparsernn <= 0.3 say "tagger" (an alias, settings.TASK_SETTINGS)
    description = "sequence tagging (WSJ POS), scored by token accuracy"
    primary = Metric("accuracy", "max", percent=True)
    corpus = TaggedCorpus

    @classmethod
    def load_data(cls, config: RunConfig) -> tuple[TaggedCorpus, Path, None]:
        """The CoNLL files in ``data.dir``, else ``wsj-pos`` under the data roots."""
        from sparsernn.data.conll import load_tagged_corpus
        from sparsernn.data.locate import data_roots

        found = (root / "wsj-pos" for root in data_roots() if (root / "wsj-pos" / "wsj_train.conll").is_file())
        directory = Path(config.data.dir).expanduser() if config.data.dir else next(found, None)
        if directory is None:
            raise DataError("no tagging corpus: give --data-dir (a directory with train/valid/test .conll files, "
                            "e.g. ../shared/data/wsj-pos)")
        return load_tagged_corpus(directory), directory, None

    def __init__(self, config: RunConfig, corpus: TaggedCorpus, device: torch.device | str = "cpu") -> None:
        self.corpus = corpus
        self.data = config.data
        self.seed = config.train.seed
        self.device = torch.device(device)
        self._order: tuple[int, torch.Tensor] | None = None
        self.train = corpus.train
        if self.data.train_tokens is not None:  # the first sentences holding that many tokens
            lengths = torch.tensor([len(w) for w, _ in corpus.train]).cumsum(0)
            self.train = corpus.train[: max(1, int((lengths <= self.data.train_tokens).sum()))]

    @property
    def steps_per_epoch(self) -> int:
        steps = math.ceil(len(self.train) / self.data.batch_size)
        if self.data.epoch_tokens is not None:  # a cap, in sentences' worth of batches
            tokens = sum(len(w) for w, _ in self.train)
            steps = min(steps, max(1, math.ceil(steps * self.data.epoch_tokens / tokens)))
        return steps

    def build_model(self, config: ModelConfig) -> SequenceTagger:
        if config.tie_weights:
            raise ConfigError("model.tie_weights: a tagger's decoder reads tags, not words; it has nothing to tie")
        ranks = None
        if config.embedding_density < 1.0:
            ranks = word_ranks(self.frequencies(), config.embedding_sort, seed=0)
        return SequenceTagger(config, len(self.corpus.words), len(self.corpus.tags), ranks)

    def frequencies(self) -> torch.Tensor:
        """How often each word id occurs in the sentences the model trains on."""
        return torch.bincount(torch.cat([w for w, _ in self.train]), minlength=len(self.corpus.words))

    @classmethod
    def model_from_meta(cls, config: ModelConfig, meta: dict[str, Any]) -> SequenceTagger:
        return SequenceTagger(config, len(meta["vocab"]), len(meta["tags"]))

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.train), generator=generator))
        return self._order[1]

    def training_loss(self, model: nn.Module, epoch: int, step: int) -> tuple[torch.Tensor, int]:
        order = self._epoch_order(epoch)
        size = self.data.batch_size
        chosen = order[(step * size) % len(order):][:size].tolist()
        words, tags, lengths = pad_batch([self.train[i] for i in chosen], PAD_TAG)
        logits = model(words.to(self.device), lengths)
        tags = tags.to(self.device)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tags.reshape(-1),
                                           ignore_index=PAD_TAG)
        return loss, int((tags != PAD_TAG).sum())

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        was_training = model.training
        model.eval()
        sentences = self.train if split == "train" else self.corpus.split(split)
        correct = counted = 0
        total_loss = 0.0
        size = self.data.eval_batch_size * 10  # whole sentences: larger batches are cheap here
        with torch.inference_mode():
            for start in range(0, len(sentences), size):
                words, tags, lengths = pad_batch(sentences[start:start + size], PAD_TAG)
                logits = model(words.to(self.device), lengths)
                tags = tags.to(self.device)
                total_loss += float(nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                                tags.reshape(-1), ignore_index=PAD_TAG,
                                                                reduction="sum"))
                right, real = accuracy_counts(logits, tags)
                correct += right
                counted += real
        model.train(was_training)
        return {"loss": total_loss / counted, "accuracy": correct / counted}

    def lyapunov_inputs(self, samples: int, steps: int) -> torch.Tensor:
        stream = torch.cat([w for w, _ in self.corpus.valid])
        needed = samples * steps
        if stream.numel() < needed:
            stream = stream.repeat(needed // stream.numel() + 1)
        return stream[:needed].view(samples, steps)

    def meta(self) -> dict[str, Any]:
        return {"vocab": list(self.corpus.words), "tags": list(self.corpus.tags)}

    def check_meta(self, meta: dict[str, Any], path: Path) -> None:
        if meta.get("vocab") != list(self.corpus.words) or meta.get("tags") != list(self.corpus.tags):
            raise CheckpointError(f"{path}: its vocabulary or tag set differs from the corpus in "
                                  f"{self.corpus.directory} (trained on other data, or before sparsernn 0.3 gave "
                                  "unknown words their shape classes?)")

    def describe(self) -> str:
        tokens = sum(len(w) for w, _ in self.train)
        return (f"tagging {self.corpus.directory}: {len(self.train):,} training sentences ({tokens:,} "
                f"tokens), {len(self.corpus.words):,} words, {len(self.corpus.tags)} tags")


TASKS.register(Tagging)


def tag_set(meta: dict[str, Any], path: str | Path) -> list[str]:
    """The tag set a checkpoint's metadata records; a checkpoint without one is not a tagger's."""
    if "tags" not in meta:
        raise SparsernnError(f"{path}: not a tagger checkpoint (it has no tag set); train one with sparsernn tag train")
    return list(meta["tags"])


def tag_sentences(model: nn.Module, vocab: list[str], tags: list[str], sentences: list[list[str]]) -> str:
    """The sentences tagged by ``model`` as CoNLL text: ``token<TAB>tag`` lines, a blank line between
    sentences. A word not in ``vocab`` is read as its unknown-word class (``word_id``)."""
    ids = {w: i for i, w in enumerate(vocab)}
    model.eval()
    blocks = []
    with torch.inference_mode():
        for tokens in sentences:
            words = torch.tensor([[word_id(t, ids)] for t in tokens])
            predicted = model(words).argmax(-1)[:, 0].tolist()
            blocks.append("".join(f"{t}\t{tags[g]}\n" for t, g in zip(tokens, predicted)))
    return "\n".join(blocks)
