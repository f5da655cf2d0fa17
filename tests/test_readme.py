"""The README cannot drift from the code: every shell command in it names commands and options the
CLI has (and parses), and every Python snippet runs, on a small corpus and cut budgets."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import typer

import sparsernn.config
from sparsernn.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def snippets(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


def sparsernn_commands() -> list[list[str]]:
    """Every ``sparsernn ...`` invocation in the README's shell blocks, as argument lists."""
    commands = []
    for block in snippets("bash"):
        for line in block.splitlines():
            for part in line.split("#")[0].split("&&"):
                words = shlex.split(part)
                if words and Path(words[0]).name == "sparsernn":
                    commands.append(words[1:])
    return commands


def parses(args: list[str]) -> None:
    """Resolve the (sub)command and parse its options and arguments, as the CLI would, without running it;
    what the CLI rejects raises the parser's own error (a ``UsageError``)."""
    command, names = typer.main.get_command(app), ["sparsernn"]
    while hasattr(command, "commands"):  # a group: its subcommand, or click's "No such command"
        name, command, args = command.resolve_command(command.make_context(" ".join(names), list(args)), list(args))
        names.append(name)
    command.make_context(" ".join(names), list(args))


def test_the_readme_shows_commands():
    commands = sparsernn_commands()
    assert len(commands) >= 20 and {c[0] for c in commands} >= {"train", "eval", "compact", "lyapunov", "data"}


@pytest.mark.parametrize("args", sparsernn_commands(), ids=lambda args: " ".join(args)[:60])
def test_each_readme_command_exists_and_parses(args):
    parses(args)


# the exceptions of the click that typer parses with (its own copy in recent typer versions)
CLICK = sys.modules[typer.BadParameter.__module__]


@pytest.mark.parametrize("bad,error,message", [
    (["train", "--no-such-option"], "NoSuchOption", "No such option: --no-such-option"),
    (["evaluate", "runs/x"], "UsageError", "No such command 'evaluate'"),
    (["data", "fetch"], "UsageError", "No such command 'fetch'"),
    (["lyapunov", "runs/x", "--samples", "ten"], "BadParameter", "Invalid value for '--samples'"),
    (["lyapunov"], "MissingParameter", "Missing argument"),
])
def test_the_checker_rejects_what_the_cli_rejects(bad, error, message):
    with pytest.raises(CLICK.UsageError) as info:
        parses(bad)
    assert type(info.value) is getattr(CLICK, error)
    assert message in info.value.format_message()
    if error == "BadParameter":
        assert "integer" in info.value.format_message()


def test_the_python_snippets_run(synthetic_dir, tmp_path, monkeypatch):
    """The snippets, in order and in one namespace as a reader would run them, with PTB replaced by a
    small generated corpus and every config cut to a few hundred tokens per epoch."""
    resolve = sparsernn.config.resolve_config
    cuts = {"data.epoch_tokens": 400, "data.batch_size": 4, "data.eval_batch_size": 4, "data.bptt": 10,
            "model.hidden_sizes": [40, 40], "train.device": "cpu"}

    def cut(preset=None, config_file=None, overrides=None):
        return resolve(preset, config_file, {**cuts, **(overrides or {})})

    monkeypatch.setattr(sparsernn.config, "resolve_config", cut)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    blocks = snippets("python")
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block.replace("../shared/data/ptb", str(synthetic_dir)), str(README), "exec"), namespace)
    assert (tmp_path / "runs" / "api" / "results.json").is_file() and namespace["result"]["test_ppl"] > 1
    assert namespace["spectrum"].exponents.numel() == 64
    assert len(namespace["text"]) == 10 and (tmp_path / "small.pt2").is_file()
    assert (tmp_path / "small-int8.onnx").stat().st_size < (tmp_path / "small.onnx").stat().st_size
