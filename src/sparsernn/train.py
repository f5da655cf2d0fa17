"""The Trainer: the training loop of any Task, with schedules, evaluation, checkpoints and resume.
It knows sparsity only through the ``Sparsifier`` hooks and the task only through ``Task``.

``fit(until_epoch=E)`` trains up to epoch ``E`` of the run's planned length (``train.epochs``, the
horizon every schedule follows) and returns with everything saved to continue; a later ``fit`` in
the same process, or in a new one after ``Trainer(..., resume=True)``, continues bit for bit as if
never stopped. The test split is scored only when asked for (``fit(test=True)``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsernn import checkpoint
from sparsernn.config import RunConfig, validate
from sparsernn.data.lm import Corpus
from sparsernn.errors import CheckpointError, ConfigError, Failure, LayerRemoved, TrainingDiverged
from sparsernn.models.lm import count_parameters
from sparsernn.optim import NTASGD, build_optimizer, learning_rate
from sparsernn.progress import Reporter, SilentReporter, epoch_line
from sparsernn.resume import load_resume, save_resume
from sparsernn.runs import (BEST, FAILED, LAST, RESULTS, SPARSITY, RunDir, flatten_fields, model_path, resume_config,
                           save_model)
from sparsernn.sparsity import Sparsifier, build_sparsifier, resolve_method
from sparsernn.sparsity.masks import strip_masks
from sparsernn.sparsity.report import density_report, density_table
from sparsernn.runtime import build_model_within_memory, resolve_device, seed_everything
from sparsernn.tasks import Task, build_task


__all__ = ["EpochCallback", "Trainer", "build_optimizer", "learning_rate", "resolve_device"]

EpochCallback = Callable[[dict[str, Any]], None]


class Trainer:
    """Trains ``config`` on ``data`` (a ``Task``, or a language-modelling ``Corpus``), writing
    checkpoints and metrics to ``out_dir`` (if given); ``resume=True`` continues the run saved there.

    ``fit()`` trains and returns a summary; ``train_epoch()``, ``train_step()`` and ``evaluate_split()``
    are the pieces, usable on their own (benchmarks, notebooks).
    """

    def __init__(
        self,
        config: RunConfig,
        data: Task | Corpus,
        out_dir: str | Path | None = None,
        sparsifier: Sparsifier | None = None,
        reporter: Reporter | None = None,
        resume: bool = False,
    ) -> None:
        self.config = config = resolve_method(config)  # the method's defaults filled in: what runs
        self.run = RunDir(out_dir) if out_dir is not None else None
        self.reporter = reporter or SilentReporter()
        self.device = resolve_device(config.train.device)
        self.task = build_task(config, data, self.device)
        seed_everything(config.train.seed)
        self.model = build_model_within_memory(self.task, config.model, self.device)
        if config.train.init_from:
            self._init_from(Path(config.train.init_from))
        self.optimizer = build_optimizer(self.model.parameters(), config.optim)
        self.steps_per_epoch = self.task.steps_per_epoch
        self.sparsifier = sparsifier or build_sparsifier(config, self.steps_per_epoch)
        self.sparsifier.attach(self.model, self.optimizer)
        # Progress of the run; all of it goes into the resume checkpoint.
        self.epoch = 1  # the epoch in progress (or next to start)
        self.step_in_epoch = 0
        self.epoch_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.epoch_units = 0
        self.epoch_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self.best_score: float | None = None
        if resume:
            if self.run is None:
                raise ConfigError("resume=True needs the run directory (out_dir) to resume from")
            self.load_resume(self.run / LAST)

    @classmethod
    def open(cls, out_dir: str | Path, data: Task | Corpus, config: RunConfig | None = None,
             overrides: dict[str, Any] | None = None, reporter: Reporter | None = None) -> Trainer:
        """Run or resume: continue the run started in ``out_dir`` (its stored config, with the
        ``overrides`` a resume allows, see ``runs.resume_config``; changes are printed and recorded in
        the run directory), or start ``config`` there. A ``config`` given for a run that exists must
        agree with it where a resume may not change anything."""
        run = RunDir(out_dir)
        if not run.has_run:
            if config is None:
                raise ConfigError(f"{run}: no run to resume here (no {LAST})")
            if overrides:
                merged = config.to_dict()
                for dotted, value in overrides.items():
                    section, _, name = dotted.partition(".")
                    merged.setdefault(section, {})[name] = value
                config = validate(merged, "config + overrides")
            return cls(config, data, out_dir, reporter=reporter)
        if config is not None:
            overrides = {**flatten_fields(resolve_method(config).to_dict()), **(overrides or {})}
        resumption = resume_config(run, overrides)
        trainer = cls(resumption.config, data, out_dir, reporter=reporter, resume=True)
        if resumption.changed:
            trainer.reporter.message("changed: " + ", ".join(f"{name} {old} -> {new}" for name, (old, new)
                                                             in resumption.changed.items())
                                     + f" from epoch {trainer.epoch}")
            run.changes(trainer.epoch, resumption.changed)
        return trainer

    @property
    def horizon(self) -> int:
        """The planned length of the run in epochs; every schedule is a function of it."""
        return self.config.train.epochs

    @property
    def complete(self) -> bool:
        return self.epoch > self.horizon

    # ---- the loop ------------------------------------------------------------------------------

    def train_step(self, epoch: int, step: int) -> tuple[torch.Tensor, int]:
        """One optimizer step on the task's training batch ``(epoch, step)``: its detached mean loss and size."""
        loss, units = self.task.training_loss(self.model, epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.sparsifier.after_backward()
        if self.config.optim.clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.clip)
        self.optimizer.step()
        self.sparsifier.after_step()
        return loss.detach(), units

    def train_epoch(self) -> dict[str, Any]:
        """Run (the rest of) the current epoch; returns its training metrics."""
        epoch, cfg = self.epoch, self.config
        lr = learning_rate(cfg.optim, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.reporter.start_epoch(epoch, self.steps_per_epoch, self.step_in_epoch, lr)
        started, window_units = time.perf_counter(), 0
        rate = f"{self.task.unit}/s"
        while self.step_in_epoch < self.steps_per_epoch:
            try:
                loss, units = self.train_step(epoch, self.step_in_epoch)
            except LayerRemoved as exc:
                step = self.step_in_epoch + 1
                self._stop(LayerRemoved(f"epoch {epoch}, step {step}: {exc}"), step=step)
            self.epoch_loss += loss * units
            self.epoch_units += units
            window_units += units
            self.step_in_epoch += 1
            step = self.step_in_epoch
            every = cfg.train.checkpoint_every
            saving = bool(every) and step % every == 0 and step < self.steps_per_epoch and self.run is not None
            if step % cfg.train.log_interval == 0 or step == self.steps_per_epoch or saving:
                # the running loss is read here, not every step (no device sync per step); a non-finite
                # one stops the run before anything is saved from it
                mean = self.epoch_loss.item() / self.epoch_units
                if not math.isfinite(mean):
                    self._diverged(f"training loss became {mean} in epoch {epoch}, by step {step}")
                elapsed = time.perf_counter() - started
                self.reporter.update(step, {"loss": mean, **self.task.loss_metrics(min(mean, 50.0)),
                                            rate: window_units / max(elapsed, 1e-9)})
            if saving:
                self.epoch_seconds += time.perf_counter() - started
                started, window_units = time.perf_counter(), 0
                self.save_resume()
        self.epoch_seconds += time.perf_counter() - started
        self.reporter.end_epoch()
        train_loss = self.epoch_loss.item() / max(self.epoch_units, 1)
        return {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            **{f"train_{k}": v for k, v in self.task.loss_metrics(train_loss).items()},
            "tokens": self.epoch_units,
            "tokens_per_s": self.epoch_units / max(self.epoch_seconds, 1e-9),
            "train_seconds": self.epoch_seconds,
        }

    def evaluation_weights(self):
        """Averaged weights once NT-ASGD averages, the live weights otherwise."""
        return self.optimizer.averaged() if isinstance(self.optimizer, NTASGD) else nullcontext()

    def evaluate_split(self, split: str) -> dict[str, float]:
        """The task's metrics of the model as evaluated now (averaged weights under NT-ASGD)."""
        with self.evaluation_weights():
            return self.task.evaluate(self.model, split)

    def fit(self, until_epoch: int | None = None, on_epoch: EpochCallback | None = None,
            test: bool = False) -> dict[str, Any]:
        """Train up to epoch ``until_epoch`` (default: the planned length), keeping the best model by the
        task's primary validation metric; returns ``summary()``.

        Each finished epoch is saved (resume checkpoint, metrics line) before ``on_epoch(record)`` is
        called, so a callback that raises (a search pruning a candidate) loses nothing. When the run
        reaches its planned length the final line and ``results.json`` are written: validation of the
        best model and, with ``test=True``, its test metrics.
        """
        stop = self.horizon if until_epoch is None else min(until_epoch, self.horizon)
        if until_epoch is not None and until_epoch < 1:
            raise ConfigError(f"until_epoch must be at least 1, got {until_epoch}")
        if test:  # a run that will be scored on test checks that split now, not after training
            self.task.check_split("test")
        if self.run is not None and not self.complete:
            self.run.create()
            self.run.write_config(self.config)
            self.run.write_records(self.history)  # the metrics file agrees with the checkpoint
        if self.epoch == 1 and self.step_in_epoch == 0:
            self._report_sparsity("start")
        started, first = time.perf_counter(), self.epoch
        while self.epoch <= stop:
            record = self.train_epoch()
            score = self._validate_epoch(record)
            # time left: this call's mean wall time per epoch (training and validation) for what remains
            left = (time.perf_counter() - started) / (self.epoch + 1 - first) * (stop - self.epoch)
            self.reporter.message(epoch_line(record, self.horizon, self.task.primary.name, score, self.task.unit,
                                             self._sparsity_state(), left if self.epoch < stop else None))
            self._close_epoch(record, score)
            if on_epoch is not None:
                on_epoch(record)
        if self.complete:
            return self._finish(test)
        return self.summary()

    def _validate_epoch(self, record: dict[str, Any]) -> float:
        """Score the epoch just trained on the validation split (into ``record``), let NT-ASGD and the
        sparsifier see it, and return the primary metric; ``record["best"]`` says whether it improved."""
        valid = self.evaluate_split("valid")
        # every metric, not only the loss: a finite loss can still overflow its perplexity
        non_finite = {name: value for name, value in valid.items() if not math.isfinite(value)}
        if non_finite:
            self._diverged(f"validation {', '.join(f'{k} is {v}' for k, v in non_finite.items())} "
                           f"after epoch {self.epoch}")
        record.update({f"val_{name}": value for name, value in valid.items()})
        if isinstance(self.optimizer, NTASGD) and self.optimizer.observe(valid["loss"]):
            self.reporter.message(f"epoch {self.epoch}: validation stalled; averaging weights from now on")
        record["averaging"] = bool(getattr(self.optimizer, "averaging", False))
        self.sparsifier.end_epoch(self.epoch, record)
        score = valid[self.task.primary.name]
        record["best"] = self.task.primary.better(score, self.best_score)
        return score

    def _close_epoch(self, record: dict[str, Any], score: float) -> None:
        """Keep the epoch: the best model when it improved, then the resume checkpoint and the metrics
        line, in that order, before anything else may happen."""
        self.history.append(record)
        if record["best"]:
            self.best_score = score
            if self.run is not None:
                self.save_model(self.run / BEST)
        self.advance_epoch()
        if self.run is not None:
            self.save_resume()
            self.run.append_record(record)

    def _diverged(self, reason: str) -> None:
        """Stop a run whose numbers stopped being finite (see ``_stop``)."""
        self._stop(TrainingDiverged(f"{reason}: training diverged (try a smaller learning rate or clip)"))

    def _stop(self, error: Failure, step: int | None = None) -> None:
        """Stop a run that cannot go on: the last good checkpoint stays, and the run directory records
        why (``failed.json``; a search marks such a candidate failed)."""
        where = ""
        if self.run is not None:
            self.run.write_json(FAILED, {"reason": str(error), "epoch": self.epoch,
                                        "step": self.step_in_epoch if step is None else step})
            where = (f"; {self.run} keeps its last good checkpoint" if self.run.has_run
                     else f"; no checkpoint was saved before, in {self.run}")
        raise type(error)(f"{error}{where}") from None

    def summary(self) -> dict[str, Any]:
        """Where the run stands: epochs trained, whether it is complete, and the best epoch's validation."""
        best = self.best_record()
        summary = {"epochs_trained": self.epoch - 1, "horizon": self.horizon, "complete": self.complete,
                   "best_epoch": best["epoch"] if best else None}
        if best:
            summary.update({k: v for k, v in best.items() if k.startswith("val_")})
        return summary

    def best_record(self) -> dict[str, Any] | None:
        primary = self.task.primary
        best = None
        for record in self.history:
            if best is None or primary.better(record[f"val_{primary.name}"], best[f"val_{primary.name}"]):
                best = record
        return best

    def best_model(self) -> nn.Module:
        """A copy of the model with the best epoch's weights (as evaluated): from ``best.safetensors``
        in a run directory, otherwise the model as it is now."""
        model = copy.deepcopy(self.model)
        if self.run is not None and (self.run / BEST).is_file():
            tensors, _ = checkpoint.load(self.run / BEST, self.device)
            model.load_state_dict(checkpoint.subtree(tensors, "model"))
        else:
            with self.evaluation_weights():
                model.load_state_dict(self.model.state_dict())
        return model.eval()

    def _finish(self, test: bool) -> dict[str, Any]:
        """The final line: the best model's validation (and test) metrics; also ``results.json``."""
        done = self.run.results() if self.run is not None else None
        if done is not None and (not test or "test_loss" in done):
            return done
        model = self.best_model()
        result: dict[str, Any] = {"event": "final", **self.summary()}
        result.update({f"val_{k}": v for k, v in self.task.evaluate(model, "valid").items()})
        if test:
            result.update({f"test_{k}": v for k, v in self.task.evaluate(model, "test").items()})
        sparsity = density_report(model)
        result.update(parameters=count_parameters(model), nonzero_prunable=sparsity["nonzero"],
                      density=sparsity["density"], train_seconds=sum(r["train_seconds"] for r in self.history))
        if done is None:
            self._report_sparsity("end")
        shown = " | ".join(f"{split} {self.task.primary.name} {result[f'{split}_{self.task.primary.name}']:.2f}"
                           for split in ("val", "test") if f"{split}_{self.task.primary.name}" in result)
        state = self._sparsity_state()
        self.reporter.message(f"best epoch {result['best_epoch']} | {shown}" + (f" | at the end: {state}" if state else ""))
        if self.run is not None:
            self.run.append_record(result)
            self.run.write_json(RESULTS, result)
        return result

    def _sparsity_state(self) -> str:
        # describe() is optional for Sparsifiers written before it existed
        return getattr(self.sparsifier, "describe", lambda: "")()

    def _report_sparsity(self, when: str) -> None:
        """Print the per-matrix density table and keep it in the run directory (masked models only)."""
        report = density_report(self.model)
        if not report["matrices"]:
            return
        self.reporter.message(density_table(report, f"sparsity at {when}: {report['nonzero']:,} non-zero of "
                                                    f"{report['total']:,} prunable weights"))
        if self.run is not None:
            saved = self.run.read_json(SPARSITY) or {}
            saved[when] = report
            self.run.write_json(SPARSITY, saved)

    def advance_epoch(self) -> None:
        """Move on to the next epoch (``fit`` does this after validation, before checkpointing)."""
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss.zero_()
        self.epoch_units = 0
        self.epoch_seconds = 0.0

    # ---- checkpoints ---------------------------------------------------------------------------

    def _init_from(self, path: Path) -> None:
        """Fine-tuning: start from a trained checkpoint's weights (same architecture and data); a run
        directory means its best model (averaged weights under NT-ASGD: what was evaluated)."""
        path = model_path(path)
        tensors, meta = checkpoint.load(path, self.device)
        self.task.check_meta(meta, path)
        weights = strip_masks(checkpoint.subtree(tensors, "model"))
        ours = self.model.state_dict()
        for name, value in weights.items():
            if name in ours and ours[name].shape != value.shape:
                raise CheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, the model here "
                                      f"{tuple(ours[name].shape)} (train.init_from needs the same sizes)")
        self.model.load_state_dict(weights)

    def checkpoint_meta(self) -> dict[str, Any]:
        """The JSON metadata every checkpoint of this run carries: task, config, epoch and history."""
        return {"kind": self.task.kind, "config": self.config.to_dict(), **self.task.meta(), "epoch": self.epoch,
                "history": self.history}

    def save_model(self, path: Path) -> None:
        """The model as evaluated (averaged weights under NT-ASGD), for use after training."""
        with self.evaluation_weights():
            save_model(path, self.model, self.checkpoint_meta())

    def save_resume(self) -> None:
        """Everything needed to continue exactly where the run is now (``resume.save_resume``)."""
        save_resume(self, self.run / LAST)

    def load_resume(self, path: Path) -> None:
        """Continue from the resume checkpoint ``path`` (``resume.load_resume``)."""
        load_resume(self, path)
