"""What a user sees while a model trains: a live progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter(Protocol):
    def start_epoch(self, epoch: int, total_steps: int, done_steps: int, lr: float) -> None: ...

    def update(self, step: int, stats: dict[str, float]) -> None:
        """Running statistics of the epoch: ``{"loss": ..., "ppl": ..., "tok/s": ...}`` (rates end in /s)."""

    def end_epoch(self) -> None: ...

    def message(self, text: Any) -> None:
        """A line of text or a rich renderable (table)."""


class SilentReporter:
    def start_epoch(self, epoch: int, total_steps: int, done_steps: int, lr: float) -> None:
        pass

    def update(self, step: int, stats: dict[str, float]) -> None:
        pass

    def end_epoch(self) -> None:
        pass

    def message(self, text: Any) -> None:
        pass


class ConsoleReporter:
    """A rich progress bar with live loss, perplexity and tokens/s; plain lines when not on a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None
        self._epoch = 0
        self._total = 0

    def start_epoch(self, epoch: int, total_steps: int, done_steps: int, lr: float) -> None:
        self._epoch, self._total = epoch, total_steps
        if not self.live:
            self.console.print(f"epoch {epoch}: {total_steps} steps, lr {lr:.4g}" + (
                f", resuming at step {done_steps}" if done_steps else ""))
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total_steps, completed=done_steps,
                                             stats=f"lr {lr:.4g}")

    def update(self, step: int, stats: dict[str, float]) -> None:
        stats = "  ".join(f"{value:,.0f} {name}" if name.endswith("/s") else f"{name} {value:.4g}"
                          for name, value in stats.items())
        if self._progress is not None:
            self._progress.update(self._task, completed=step, stats=stats)
        else:
            self.console.print(f"  epoch {self._epoch} step {step}/{self._total}  {stats}")

    def end_epoch(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def message(self, text: Any) -> None:
        # a line stays one line in a log file (no wrapping at 80 columns, no cut paths)
        self.console.print(text, soft_wrap=isinstance(text, str))


def default_reporter() -> Reporter:
    console = Console(stderr=True, file=sys.stderr)
    if not console.is_terminal:  # a log file: tables as wide as they need, not 80 columns
        console = Console(stderr=True, file=sys.stderr, width=200)
    return ConsoleReporter(console)


def duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour."""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def epoch_line(record: dict[str, Any], horizon: int, metric: str, score: float, unit: str, sparsity: str = "",
               left: float | None = None) -> str:
    """The line a finished epoch prints: epoch, learning rate, losses, the primary validation metric,
    speed, the sparsifier's state, the time left (``left`` seconds, none at the end) and whether it is
    the best so far."""
    return (f"epoch {record['epoch']:3d}/{horizon} | lr {record['lr']:.4g} | train loss {record['train_loss']:.3f} | "
            f"valid {metric} {score:.4g} | {record['tokens_per_s']:,.0f} {unit}/s"
            + (f" | {sparsity}" if sparsity else "")
            + (f" | {duration(left)} left" if left is not None else "")
            + (" | best" if record.get("best") else ""))
