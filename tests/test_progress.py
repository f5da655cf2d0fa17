"""What a user sees while a model trains: the log lines written when stderr is a file (their exact
text), the live progress bar on a terminal (its task's counts and statistics), and messages."""

from __future__ import annotations

import io
import sys

from rich.console import Console
from rich.table import Table

from sparsernn.progress import ConsoleReporter, SilentReporter, default_reporter

STATS = {"loss": 4.56789, "ppl": 96.3, "tok/s": 12345.6}


def log_reporter(width: int = 80) -> tuple[ConsoleReporter, io.StringIO]:
    file = io.StringIO()
    return ConsoleReporter(Console(file=file, force_terminal=False, width=width)), file


def test_in_a_log_file_each_epoch_and_update_is_one_plain_line():
    reporter, file = log_reporter()
    assert not reporter.live
    reporter.start_epoch(3, 40, 0, 0.5)
    reporter.update(5, STATS)
    reporter.update(40, {"loss": 4.0, "ppl": 54.598150033, "tok/s": 999.4})
    reporter.end_epoch()
    reporter.start_epoch(4, 40, 10, 0.0625)
    # statistics to 4 significant digits, rates (names ending in /s) as whole numbers with separators
    assert file.getvalue().splitlines() == [
        "epoch 3: 40 steps, lr 0.5",
        "  epoch 3 step 5/40  loss 4.568  ppl 96.3  12,346 tok/s",
        "  epoch 3 step 40/40  loss 4  ppl 54.6  999 tok/s",
        "epoch 4: 40 steps, lr 0.0625, resuming at step 10",
    ]


def test_a_message_line_is_not_wrapped_and_a_table_is_drawn():
    reporter, file = log_reporter(width=80)
    line = "checkpoint written to " + "/very/long/path" * 20
    reporter.message(line)
    assert file.getvalue() == line + "\n"  # one line, whole, in an 80-column log
    table = Table(title="sparsity")
    table.add_column("matrix")
    table.add_row("decoder.weight")
    reporter.message(table)
    assert "sparsity" in file.getvalue() and "decoder.weight" in file.getvalue()


def test_on_a_terminal_a_live_bar_counts_the_steps_and_shows_the_statistics():
    file = io.StringIO()
    reporter = ConsoleReporter(Console(file=file, force_terminal=True, width=120))
    assert reporter.live
    reporter.start_epoch(2, 10, 4, 1.0)  # resumed at step 4 of 10
    (task,) = reporter._progress.tasks
    assert (task.total, task.completed, task.fields["stats"]) == (10, 4, "lr 1")
    reporter.update(7, STATS)
    assert task.completed == 7 and task.fields["stats"] == "loss 4.568  ppl 96.3  12,346 tok/s"
    reporter.end_epoch()
    assert reporter._progress is None and task.completed == 7  # stopped where it was
    assert "  epoch 2 step 7/10" not in file.getvalue()  # no log lines on a terminal
    reporter.end_epoch()  # twice is harmless


def test_the_default_reporter_writes_wide_log_lines_to_a_redirected_stderr(monkeypatch):
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    reporter = default_reporter()
    assert isinstance(reporter, ConsoleReporter) and not reporter.live
    assert reporter.console.width == 200  # tables in a log file as wide as they need, not 80 columns
    reporter.start_epoch(1, 5, 0, 20.0)
    assert stderr.getvalue() == "epoch 1: 5 steps, lr 20\n"


def test_the_silent_reporter_says_nothing(capsys):
    reporter = SilentReporter()
    reporter.start_epoch(1, 10, 0, 1.0)
    reporter.update(1, STATS)
    reporter.end_epoch()
    reporter.message("hello")
    assert capsys.readouterr() == ("", "")

