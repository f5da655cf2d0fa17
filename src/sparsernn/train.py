"""The Trainer: truncated-BPTT training of a language model with schedules, evaluation,
checkpoints and resume. It knows sparsity only through the ``Sparsifier`` hooks.

Run directory layout::

    config.yaml          the resolved run config
    metrics.jsonl        one line per epoch, then a final line with test perplexity
    best.safetensors     best model by validation perplexity (+ best.json, readable metadata)
    last.safetensors     resume state: model, optimizer, sparsifier, RNG, carried hidden state
    results.json         final numbers
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from sparsernn import checkpoint
from sparsernn.config import OptimConfig, RunConfig, validate
from sparsernn.data.lm import Corpus, Vocabulary, batchify, bptt_window, num_windows
from sparsernn.errors import CheckpointError, ConfigError
from sparsernn.models.lm import RNNLanguageModel, count_parameters, detach_state, state_from_tensors, state_tensors
from sparsernn.optim import NTASGD
from sparsernn.progress import Reporter, SilentReporter
from sparsernn.sparsity.base import Sparsifier
from sparsernn.sparsity.masks import strip_masks
from sparsernn.sparsity.methods import build_sparsifier
from sparsernn.sparsity.report import density_report, density_table

BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS = "metrics.jsonl"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available")
    return torch.device(name)


def learning_rate(config: OptimConfig, epoch: int) -> float:
    """Zaremba-style step schedule: ``lr * decay ** max(epoch - decay_start_epoch, 0)`` (epochs from 1)."""
    return config.lr * config.lr_decay ** max(epoch - config.decay_start_epoch, 0)


def build_optimizer(params, config: OptimConfig) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "nt_asgd":
        return NTASGD(params, lr=config.lr, weight_decay=config.weight_decay, nonmono=config.nonmono)
    # Averaged SGD from the first step (Polyak averaging; t0=0, lambd=0 as in AWD-LSTM).
    return torch.optim.ASGD(params, lr=config.lr, t0=0, lambd=0.0, weight_decay=config.weight_decay)


def build_model(config: RunConfig, vocab_size: int, seed: int | None = None) -> RNNLanguageModel:
    if seed is not None:
        torch.manual_seed(seed)
    return RNNLanguageModel(config.model, vocab_size)


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean negative log-likelihood per token (nats)
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


def evaluate(model: nn.Module, batched: torch.Tensor, bptt: int) -> EvalResult:
    """Perplexity over a batchified split, hidden state carried across windows."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=batched.device)
    tokens = 0
    with torch.inference_mode():
        state = model.init_state(batched.size(1))
        for index in range(num_windows(batched.size(0), bptt)):
            inputs, targets = bptt_window(batched, index, bptt)
            logits, state = model(inputs, state)
            total += nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
            ).double()
            tokens += targets.numel()
    model.train(was_training)
    return EvalResult(loss=total.item() / tokens, tokens=tokens)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    version, _, gauss = random.getstate()
    random.setstate((version, tuple(state["python"]), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains ``config`` on ``corpus``, writing checkpoints and metrics to ``out_dir`` (if given).

    ``fit()`` runs the remaining epochs and returns the final metrics; ``train_epoch()`` and
    ``evaluate_split()`` are the pieces, usable on their own (benchmarks, notebooks).
    """

    def __init__(
        self,
        config: RunConfig,
        corpus: Corpus,
        out_dir: str | Path | None = None,
        sparsifier: Sparsifier | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.config = config
        self.corpus = corpus
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.reporter = reporter or SilentReporter()
        self.device = resolve_device(config.train.device)
        seed_everything(config.train.seed)
        self.model = build_model(config, len(corpus.vocab)).to(self.device)
        if config.train.init_from:
            self._init_from(Path(config.train.init_from))
        self.optimizer = build_optimizer(self.model.parameters(), config.optim)
        data = config.data
        self.train_data = batchify(corpus.train, data.batch_size).to(self.device)
        self.valid_data = batchify(corpus.valid, data.eval_batch_size).to(self.device)
        self.test_data = batchify(corpus.test, data.eval_batch_size).to(self.device)
        self.total_windows = num_windows(self.train_data.size(0), data.bptt)
        per_epoch = self.total_windows
        if data.epoch_tokens is not None:
            per_epoch = min(per_epoch, -(-data.epoch_tokens // (data.batch_size * data.bptt)))
        self.steps_per_epoch = per_epoch
        self.sparsifier = sparsifier or build_sparsifier(config, self.steps_per_epoch)
        self.sparsifier.attach(self.model, self.optimizer)
        # Progress of the run; all of it goes into the resume checkpoint.
        self.epoch = 1  # the epoch in progress (or next to start)
        self.step_in_epoch = 0
        self.state = self.model.init_state(data.batch_size)
        self.epoch_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.epoch_tokens = 0
        self.epoch_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self.best_val: float | None = None

    # ---- the loop ------------------------------------------------------------------------------

    def window_index(self, epoch: int, step: int) -> int:
        """Training window of step ``step`` in ``epoch``; capped epochs take successive slices."""
        return ((epoch - 1) * self.steps_per_epoch + step) % self.total_windows

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One optimizer step on one BPTT window; returns the detached mean loss."""
        self.state = detach_state(self.state)
        logits, self.state = self.model(inputs, self.state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.sparsifier.after_backward()
        if self.config.optim.clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.clip)
        self.optimizer.step()
        self.sparsifier.after_step()
        return loss.detach()

    def train_epoch(self) -> dict[str, Any]:
        """Run (the rest of) the current epoch; returns its training metrics."""
        epoch, cfg = self.epoch, self.config
        lr = learning_rate(cfg.optim, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.reporter.start_epoch(epoch, self.steps_per_epoch, self.step_in_epoch, lr)
        started, window_tokens = time.perf_counter(), 0
        while self.step_in_epoch < self.steps_per_epoch:
            index = self.window_index(epoch, self.step_in_epoch)
            if index == 0:  # the stream starts over: nothing to carry
                self.state = self.model.init_state(cfg.data.batch_size)
            inputs, targets = bptt_window(self.train_data, index, cfg.data.bptt)
            loss = self.train_step(inputs, targets)
            self.epoch_loss += loss * targets.numel()
            self.epoch_tokens += targets.numel()
            window_tokens += targets.numel()
            self.step_in_epoch += 1
            step = self.step_in_epoch
            if step % cfg.train.log_interval == 0 or step == self.steps_per_epoch:
                elapsed = time.perf_counter() - started
                self.reporter.update(step, self.epoch_loss.item() / self.epoch_tokens,
                                     window_tokens / max(elapsed, 1e-9))
            every = cfg.train.checkpoint_every
            if every and step % every == 0 and step < self.steps_per_epoch and self.out_dir is not None:
                self.epoch_seconds += time.perf_counter() - started
                started, window_tokens = time.perf_counter(), 0
                self.save_resume()
        self.epoch_seconds += time.perf_counter() - started
        self.reporter.end_epoch()
        train_loss = self.epoch_loss.item() / max(self.epoch_tokens, 1)
        return {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            "train_ppl": math.exp(train_loss),
            "tokens": self.epoch_tokens,
            "tokens_per_s": self.epoch_tokens / max(self.epoch_seconds, 1e-9),
            "train_seconds": self.epoch_seconds,
        }

    def evaluation_weights(self):
        """Averaged weights once NT-ASGD averages, the live weights otherwise."""
        return self.optimizer.averaged() if isinstance(self.optimizer, NTASGD) else nullcontext()

    def evaluate_split(self, split: str) -> EvalResult:
        data = {"valid": self.valid_data, "test": self.test_data}[split]
        with self.evaluation_weights():
            return evaluate(self.model, data, self.config.data.bptt)

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, keep the best model by validation, then score it on test."""
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.atomic_write_text(self.out_dir / "config.yaml", yaml.safe_dump(self.config.to_dict(),
                                                                                   sort_keys=False))
            self._rewrite_metrics()
        if self.epoch == 1 and self.step_in_epoch == 0:
            self._report_sparsity("start")
        while self.epoch <= self.config.train.epochs:
            record = self.train_epoch()
            valid = self.evaluate_split("valid")
            record.update(val_loss=valid.loss, val_ppl=valid.perplexity)
            if isinstance(self.optimizer, NTASGD) and self.optimizer.observe(valid.loss):
                self.reporter.message(f"epoch {self.epoch}: validation stalled; averaging weights from now on")
            record["averaging"] = bool(getattr(self.optimizer, "averaging", False))
            self.sparsifier.end_epoch(self.epoch, record)
            improved = self.best_val is None or valid.loss < self.best_val
            record["best"] = improved
            self.reporter.message(
                f"epoch {self.epoch:3d} | lr {record['lr']:.4g} | train ppl {record['train_ppl']:8.2f} | "
                f"valid ppl {record['val_ppl']:8.2f} | {record['tokens_per_s']:,.0f} tok/s"
                + (" | best" if improved else "")
            )
            self.history.append(record)
            if improved:
                self.best_val = valid.loss
                if self.out_dir is not None:
                    self.save_model(self.out_dir / BEST)
            self.advance_epoch()
            if self.out_dir is not None:
                self.save_resume()
                self._append_metrics(record)
        self._report_sparsity("end")
        return self.finish()

    def _report_sparsity(self, when: str) -> None:
        """Print the per-matrix density table and keep it in the run directory (masked models only)."""
        report = density_report(self.model)
        if not report["matrices"]:
            return
        self.reporter.message(density_table(report, f"sparsity at {when}: {report['nonzero']:,} non-zero of "
                                                    f"{report['total']:,} prunable weights"))
        if self.out_dir is not None:
            path = self.out_dir / "sparsity.json"
            saved = json.loads(path.read_text()) if path.is_file() else {}
            saved[when] = report
            checkpoint.atomic_write_text(path, json.dumps(saved, indent=1) + "\n")

    def finish(self) -> dict[str, Any]:
        """Test perplexity of the best model (by validation); written to results.json."""
        weights = self.evaluation_weights()
        if self.out_dir is not None and (self.out_dir / BEST).is_file():
            tensors, _ = checkpoint.load(self.out_dir / BEST, self.device)
            self.model.load_state_dict(checkpoint.subtree(tensors, "model"))
            weights = nullcontext()  # the best checkpoint holds the weights as evaluated
        best = min(self.history, key=lambda r: r["val_loss"]) if self.history else None
        with weights:
            valid = evaluate(self.model, self.valid_data, self.config.data.bptt)
            test = evaluate(self.model, self.test_data, self.config.data.bptt)
        sparsity = density_report(self.model)
        result = {
            "event": "final",
            "best_epoch": best["epoch"] if best else None,
            "val_loss": valid.loss,
            "val_ppl": valid.perplexity,
            "test_loss": test.loss,
            "test_ppl": test.perplexity,
            "parameters": count_parameters(self.model),
            "nonzero_prunable": sparsity["nonzero"],
            "density": sparsity["density"],
            "train_seconds": sum(r["train_seconds"] for r in self.history),
        }
        self.reporter.message(f"best epoch {result['best_epoch']} | valid ppl {valid.perplexity:.2f} | "
                              f"test ppl {test.perplexity:.2f}")
        if self.out_dir is not None:
            self._append_metrics(result)
            checkpoint.atomic_write_text(self.out_dir / "results.json", json.dumps(result, indent=1) + "\n")
        return result

    def advance_epoch(self) -> None:
        """Move on to the next epoch (``fit`` does this after validation and checkpointing)."""
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss.zero_()
        self.epoch_tokens = 0
        self.epoch_seconds = 0.0
        if self.steps_per_epoch == self.total_windows:
            self.state = self.model.init_state(self.config.data.batch_size)

    # ---- checkpoints ---------------------------------------------------------------------------

    def _init_from(self, path: Path) -> None:
        """Fine-tuning: start from a trained checkpoint's weights (same architecture and vocabulary)."""
        tensors, meta = checkpoint.load(path, self.device)
        if meta.get("vocab") != list(self.corpus.vocab.words):
            raise CheckpointError(f"{path}: vocabulary differs from the corpus in {self.corpus.directory}")
        weights = strip_masks(checkpoint.subtree(tensors, "model"))
        ours = self.model.state_dict()
        for name, value in weights.items():
            if name in ours and ours[name].shape != value.shape:
                raise CheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, the model here "
                                      f"{tuple(ours[name].shape)} (train.init_from needs the same sizes)")
        self.model.load_state_dict(weights)

    def _meta(self) -> dict[str, Any]:
        return {
            "kind": "language-model",
            "config": self.config.to_dict(),
            "vocab": list(self.corpus.vocab.words),
            "epoch": self.epoch,
            "history": self.history,
        }

    def save_model(self, path: Path) -> None:
        """The model as evaluated (averaged weights under NT-ASGD), for use after training."""
        with self.evaluation_weights():
            save_model(path, self.model, self._meta())

    def save_resume(self) -> None:
        """Everything needed to continue exactly where the run is now."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        resume = {
            "step_in_epoch": self.step_in_epoch,
            "epoch_tokens": self.epoch_tokens,
            "epoch_seconds": self.epoch_seconds,
            "best_val": self.best_val,
            "epoch_loss": self.epoch_loss,
            "state": state_tensors(self.state),
            "optimizer": self.optimizer.state_dict(),
            "sparsifier": self.sparsifier.state_dict(),
            "rng": _rng_state(),
        }
        meta = self._meta()
        meta["resume"] = checkpoint.pack(resume, "resume", tensors)
        checkpoint.save(self.out_dir / LAST, tensors, meta)

    def load_resume(self, path: Path) -> None:
        tensors, meta = checkpoint.load(path, self.device)
        if meta.get("resume") is None:
            raise CheckpointError(f"{path}: holds no resume state (is it a best-model checkpoint?)")
        if meta["vocab"] != list(self.corpus.vocab.words):
            raise CheckpointError(f"{path}: vocabulary differs from the corpus in {self.corpus.directory}")
        resume = checkpoint.unpack(meta["resume"], tensors)
        self.model.load_state_dict(checkpoint.subtree(tensors, "model"))
        self.optimizer.load_state_dict(resume["optimizer"])
        self.sparsifier.load_state_dict(resume["sparsifier"])
        self.epoch = meta["epoch"]
        self.history = meta["history"]
        self.step_in_epoch = resume["step_in_epoch"]
        self.epoch_tokens = resume["epoch_tokens"]
        self.epoch_seconds = resume["epoch_seconds"]
        self.best_val = resume["best_val"]
        self.epoch_loss = resume["epoch_loss"].to(self.device)
        self.state = state_from_tensors([t.to(self.device) for t in resume["state"]], self.model.cell)
        _set_rng_state(resume["rng"])

    # ---- metrics file --------------------------------------------------------------------------

    def _append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _rewrite_metrics(self) -> None:
        """The metrics file always agrees with the checkpoint (a resumed run drops lines written after it)."""
        text = "".join(json.dumps(r) + "\n" for r in self.history)
        checkpoint.atomic_write_text(self.out_dir / METRICS, text)


def save_model(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """A model checkpoint: its state dict under ``model.`` and ``meta`` (kind, config, vocab, ...)."""
    checkpoint.save(path, {f"model.{k}": v for k, v in model.state_dict().items()}, meta)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[RNNLanguageModel, RunConfig,
                                                                             Vocabulary, dict[str, Any]]:
    """A trained model from a checkpoint: ``(model, config, vocab, metadata)``."""
    tensors, meta = checkpoint.load(path, device)
    if meta.get("kind") != "language-model":
        raise CheckpointError(f"{path}: not a language-model checkpoint (kind {meta.get('kind')!r})")
    config = validate(meta["config"], f"{path} config")
    vocab = Vocabulary(tuple(meta["vocab"]))
    model = build_model(config, len(vocab)).to(device)
    try:
        model.load_state_dict(strip_masks(checkpoint.subtree(tensors, "model")))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[1 if "\n" in str(exc).strip() else 0].strip()
        raise CheckpointError(f"{path}: weights do not match the config stored with them ({detail})") from None
    model.eval()
    return model, config, vocab, meta
