"""What every command group shares: the Typer app and its sub-apps, the consoles, the one-line error
exit, and the small printers more than one group uses."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sparsernn import __version__
from sparsernn.errors import SparsernnError

app = typer.Typer(
    help="sparsernn: sparse, small and fast recurrent sequence models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Get and check corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")
tag_app = typer.Typer(help="Sequence tagging (WSJ POS): train, evaluate, tag a text file.", no_args_is_help=True)
app.add_typer(tag_app, name="tag")
iss_app = typer.Typer(help="ISS tools: the zeroing threshold of a trained model, structure plots of a run.",
                      no_args_is_help=True)
app.add_typer(iss_app, name="iss")

out = Console()
err = Console(stderr=True)

# options several commands declare alike
Device = Annotated[str, typer.Option(help="auto | cpu | cuda")]


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="print the version")] = False) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


def main(args: list[str] | None = None) -> None:
    """The command line: every problem ends in one line on stderr, ``error: ...``, and its exit code
    (2 for bad input or usage, 1 for work that failed)."""
    try:
        code = app(args=args, prog_name="sparsernn", standalone_mode=False)
    except SparsernnError as exc:
        _fail(str(exc), exc.exit_code)
    except Exception as exc:
        # usage errors of the command-line parser (unknown option, missing argument, not a number):
        # the parser's exceptions carry their one-line message and exit code
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        if not exc.format_message():  # help shown for a bare command: nothing went wrong
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}", exc.exit_code)
    sys.exit(code or 0)


def _fail(message: str, code: int) -> None:
    err.print(f"error: {' '.join(message.split())}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(code)


@contextmanager
def resumable(command: str) -> Iterator[None]:
    """Ctrl-C inside the block: say how to continue (``command``) and exit with 130, without a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        err.print(f"interrupted; continue with: {command}")
        raise typer.Exit(130) from None


def note(text: str) -> None:
    """A remark on stderr that is not an error (a corpus found elsewhere, a generated one)."""
    err.print(f"note: {text}")


def print_results(values: dict[str, dict[str, float] | float], title: str, metric: str = "perplexity") -> None:
    """A table of split -> metrics; a split's value is one number (``metric``) or named metrics."""
    from sparsernn.tasks import format_metric

    rows = {split: v if isinstance(v, dict) else {metric: v} for split, v in values.items()}
    names = list(dict.fromkeys(name for metrics in rows.values() for name in metrics))
    table = Table(title=title)
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    for split, metrics in rows.items():
        table.add_row(split, *(format_metric(n, metrics[n]) for n in names))
    out.print(table)


def print_table(title: str, columns: list[str], rows: list[list[str]], justify: str = "right") -> None:
    """A titled table of text cells, every column aligned by ``justify``."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(*row)
    out.print(table)
