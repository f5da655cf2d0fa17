"""A fuzz of every command's options: each option of each command (read from the CLI itself, so a new
command or option is covered without editing this file) given junk values, one at a time, over a
small working invocation of that command. Every case must end in success or in one ``error:`` line
with exit code 2 (1 for work that failed), never a traceback, and must not change its inputs.

    python tests/fuzz_cli.py              # the full set; prints how many cases, by outcome, and each defect
    python tests/fuzz_cli.py --cases 40   # a seeded sample (tests/test_fuzz.py runs one in CI)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import cli_in_process, tiny_config  # noqa: E402

JUNK = ["", "0", "-1", "1e999", "nan", "-inf", "abc", "null", "[1,2]", "{a: 1}", "1,,2", "99999999999", "é",
        "/nonexistent/path", "\x00", "0.5", "true"]
SMALL_TRAIN = ["--hidden", "8", "--batch-size", "4", "--bptt", "5", "--epochs", "1", "--epoch-tokens", "80",
               "--device", "cpu"]
SMALL_SEARCH = ["--n", "2", "--survivors", "1", "--epochs", "2", "--k", "2", "--samples", "1", "--steps", "2",
                "--set", "data.epoch_tokens=80", "--set", "model.hidden_sizes=[8]", "--set", "data.batch_size=4",
                "--set", "data.bptt=5", "--set", "data.eval_batch_size=2"]
SKIP = {"--help", "--version", "--resume", "--address", "--executor"}  # a cluster or a second run: not a one-shot case


@dataclass(frozen=True)
class Case:
    command: tuple[str, ...]
    option: str
    value: str


@dataclass
class World:
    """What the commands work on: a corpus, a finished run, a text file, a scratch directory, a CoNLL
    corpus and a finished tagger."""

    corpus: Path
    run: Path
    text: Path
    scratch: Path
    conll: Path
    tagger: Path

    def inputs(self) -> list[Path]:
        """What no case may change."""
        return [self.corpus, self.run, self.text, self.conll, self.tagger]

    def base(self, command: tuple[str, ...], out: Path) -> list:
        """A small working invocation of ``command``."""
        common = {
            ("train",): ["--data-dir", self.corpus, *SMALL_TRAIN, "--out", out],
            ("tag", "train"): ["--data-dir", self.conll, "--hidden", "8", "--epochs", "1", "--batch-size", "4",
                               "--device", "cpu", "--out", out],
            ("hyperprune",): ["--data-dir", self.corpus, *SMALL_SEARCH, "--out", out],
            ("eval",): [self.run, "--split", "valid"],
            ("tag", "eval"): [self.tagger],
            ("lyapunov",): [self.run, "--samples", "2", "--steps", "5", "--k", "4"],
            ("compact",): [self.run, "-o", out / "small.safetensors", "--no-timing"],
            ("iss", "tau"): [self.run],
            ("iss", "plot"): [self.run, "-o", out / "plots"],
            ("tag", "predict"): [self.tagger, self.text],
            ("match",): ["--dense", "20,20", "--sparse", "30,30"],
            ("data", "verify"): ["--data-dir", self.corpus],
            ("data", "download"): ["--dest", out / "ptb", "--url", f"file://{self.scratch}/none.tgz"],
        }
        return list(common.get(command, []))


def commands() -> dict[tuple[str, ...], list[str]]:
    """Every leaf command of the CLI and its options (first spelling each)."""
    import typer

    from sparsernn.cli import app

    found: dict[tuple[str, ...], list[str]] = {}

    def walk(group, path):
        for name, sub in getattr(group, "commands", {}).items():
            if getattr(sub, "commands", None):
                walk(sub, (*path, name))
            else:
                found[(*path, name)] = [p.opts[0] for p in sub.params if p.param_type_name == "option"
                                        and p.opts[0] not in SKIP]

    walk(typer.main.get_command(app), ())
    return found


# a valid value asking for endless work (10**11 epochs, 10**11 candidates) runs for days: not a case
ENDLESS = {("--epochs", "99999999999"), ("--n", "99999999999")}


def all_cases() -> list[Case]:
    """Each option with each junk value, and each command with a junk extra argument (option "")."""
    return [Case(command, option, value) for command, options in commands().items()
            for option in [*options, ""] for value in JUNK if (option, value) not in ENDLESS]


def digest(path: Path) -> dict[str, str]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run_case(world: World, case: Case, index: int) -> str | None:
    """``None`` when the case ends as promised, else what went wrong."""
    out = world.scratch / f"case-{index}"
    args = [*case.command, *world.base(case.command, out), *([case.option] if case.option else []), case.value]
    before = [digest(path) for path in world.inputs()]
    result = cli_in_process(*args)  # an exception escaping the CLI is a defect: caught below
    problem = None
    lines = result.stderr.strip().splitlines()
    if "Traceback" in result.stderr:
        problem = "traceback"
    elif result.returncode not in (0, 1, 2):
        problem = f"exit code {result.returncode}"
    elif result.returncode and not (lines and lines[-1].startswith("error: ")):
        problem = "no error line"
    elif result.returncode == 2 and len(lines) != 1:
        problem = "more than one line for bad input"
    elif [digest(path) for path in world.inputs()] != before:
        problem = "an input changed"
    elif [p for p in world.scratch.rglob("*.tmp")]:
        problem = "a partial file left"
    if problem:
        return f"{' '.join(map(str, args))}: {problem}: {result.stderr.strip()[-300:]}"
    return None


def make_world(root: Path) -> World:
    from sparsernn.data import generate_corpus, load_corpus
    from sparsernn.runs import BEST
    from sparsernn.train import Trainer

    corpus = generate_corpus(root / "corpus", seed=0, sentences=(400, 60, 60))
    run = root / "run"
    config = tiny_config(train={"epochs": 1}, data={"epoch_tokens": 8 * 10 * 2, "dir": str(corpus)},
                         model={"hidden_sizes": [8, 8]})
    Trainer(config, load_corpus(corpus), run).fit()
    assert (run / BEST).is_file()
    text = root / "sentences.txt"
    text.write_text("the cat sat\na b c\n")
    conll = root / "conll"
    conll.mkdir()
    for split, count in (("train", 30), ("valid", 6), ("test", 6)):
        (conll / f"{split}.conll").write_text("".join("the\tDT\ncat\tNN\nsat\tVB\n.\t.\n\n" for _ in range(count)))
    trained = cli_in_process("tag", "train", "--data-dir", conll, "--epochs", "1", "--hidden", "8", "--device", "cpu",
                             "--out", root / "tagger")
    assert trained.returncode == 0, trained.stderr
    (root / "scratch").mkdir()
    return World(corpus, run, text, root / "scratch", conll, root / "tagger")


def fuzz(world: World, cases: list[Case]) -> tuple[dict[int | str, int], list[str]]:
    """Run ``cases`` in the scratch directory (a junk relative path such as ``--out abc`` lands there)."""
    outcomes: dict[int | str, int] = {}
    defects = []
    home = os.getcwd()
    os.chdir(world.scratch)
    try:
        for index, case in enumerate(cases):
            try:
                problem = run_case(world, case, index)
            except Exception as exc:  # noqa: BLE001 - the CLI let an exception escape: a defect to report
                problem = f"{case}: escaped {type(exc).__name__}: {exc}"
            key = "defect" if problem else "handled"
            outcomes[key] = outcomes.get(key, 0) + 1
            if problem:
                defects.append(problem)
    finally:
        os.chdir(home)
    return outcomes, defects


def sample(count: int, seed: int) -> list[Case]:
    """A seeded sample of ``count`` cases spread evenly over the commands: each command is in it (when
    ``count`` is at least the number of commands), not only those with the most options."""
    rng = random.Random(seed)
    by_command: dict[tuple[str, ...], list[Case]] = {}
    for case in all_cases():
        by_command.setdefault(case.command, []).append(case)
    for cases in by_command.values():
        rng.shuffle(cases)
    picked: list[Case] = []
    while len(picked) < count and any(by_command.values()):
        for cases in by_command.values():
            if cases and len(picked) < count:
                picked.append(cases.pop())
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=0, help="a seeded sample of this many (0: every case)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        world = make_world(Path(root))
        cases = sample(args.cases, args.seed) if args.cases else all_cases()
        outcomes, defects = fuzz(world, cases)
    print(f"{len(cases)} cases over {len(commands())} commands: {outcomes.get('handled', 0)} handled as promised, "
          f"{len(defects)} defects")
    for defect in defects:
        print("DEFECT", defect)
    sys.exit(1 if defects else 0)


if __name__ == "__main__":
    main()
