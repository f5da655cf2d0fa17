"""Randomly corrupted configs, corpora and checkpoints, fed through the command line in this process:
each ends in success or in one ``error:`` line with exit code 2 (1 for work that failed), never in a
traceback, and leaves no partial file behind."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from sparsernn.runs import BEST
from sparsernn.train import Trainer

from conftest import cli_in_process, tiny_config

SEED = 20261124
GOOD_YAML = """\
data:
  batch_size: 8
  bptt: 10
  epoch_tokens: 400
model:
  cell: lstm
  hidden_sizes: [16, 16]
  dropout: 0.1
optim:
  name: sgd
  lr: 10.0
  clip: 0.25
sparsity:
  method: rigl
  density: 0.5
train:
  epochs: 2
  seed: 3
"""
JUNK = ["", "\x00", "\xff", ":", "- ", "{", "]", "'", "-1", "1e999", "nan", "null", "true", "[]", "{}", "\n  ",
        "abc", "0", "?", "!!python/object:os.system", "lstm", "0.0", "99999999999999999999", "é", "\t"]


def mutate_text(text: str, rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:  # replace a value
        lines = text.splitlines()
        n = rng.randrange(len(lines))
        key, sep, _ = lines[n].partition(":")
        lines[n] = f"{key}{sep} {rng.choice(JUNK)}" if sep else rng.choice(JUNK)
        return "\n".join(lines) + "\n"
    if kind == 1:  # truncate
        return text[: rng.randrange(len(text))]
    if kind == 2:  # insert junk anywhere
        at = rng.randrange(len(text))
        return text[:at] + rng.choice(JUNK) + text[at:]
    if kind == 3:  # delete a span
        at = rng.randrange(len(text))
        return text[:at] + text[at + rng.randrange(1, 20):]
    lines = text.splitlines()  # swap two lines (indentation moves)
    a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[a], lines[b] = lines[b], lines[a]
    return "\n".join(lines) + "\n"


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:  # flip bytes in the header (JSON and offsets)
        header = 8 + int.from_bytes(data[:8], "little")
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(min(header, len(data)))] = rng.randrange(256)
    elif kind == 1:  # flip bytes in the tensor data
        for _ in range(rng.randrange(1, 50)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 2:  # truncate
        del data[rng.randrange(len(data)):]
    else:  # garbage appended or prepended
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        data = bytearray(junk + data if rng.random() < 0.5 else data + junk)
    return bytes(data)


def assert_clean(result, directory: Path) -> None:
    assert "Traceback" not in result.stderr
    if result.returncode != 0:
        assert result.returncode in (1, 2), (result.returncode, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error: "), result.stderr
        if result.returncode == 2:
            assert len(lines) == 1, result.stderr  # bad input: the one line is all there is
    leftovers = [p for p in directory.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def trained(synthetic_corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz-run")
    config = tiny_config(train={"epochs": 1}, data={"epoch_tokens": 8 * 10 * 3}, model={"hidden_sizes": [16, 16]})
    Trainer(config, synthetic_corpus, path).fit()
    return path / BEST


def test_corrupted_configs(tmp_path):
    rng = random.Random(SEED)
    outcomes = {0: 0, 2: 0}
    for case in range(100):
        path = tmp_path / f"config-{case}.yaml"
        path.write_text(mutate_text(GOOD_YAML, rng), encoding="utf-8")
        result = cli_in_process("train", "-c", path, "--print-config")
        assert_clean(result, tmp_path)
        outcomes[result.returncode] += 1
    assert outcomes[0] > 5 and outcomes[2] > 30  # the mutations both keep and break configs


def test_corrupted_corpora(trained, synthetic_dir, tmp_path):
    rng = random.Random(SEED + 1)
    files = {p.name: p.read_text() for p in synthetic_dir.iterdir() if p.suffix == ".txt"}
    outcomes = {0: 0, 2: 0}
    for case in range(60):
        corpus = tmp_path / f"corpus-{case}"
        corpus.mkdir()
        for name, text in files.items():
            (corpus / name).write_text(text)
        victim = corpus / rng.choice(sorted(files))
        how = rng.randrange(4)
        if how == 0:
            victim.unlink()
        elif how == 1:
            victim.write_bytes(mutate_bytes(victim.read_bytes()[:3000], rng))
        elif how == 2:
            victim.write_text(mutate_text(victim.read_text()[:3000], rng))
        else:
            victim.write_text("")
        result = cli_in_process("eval", trained, "--data-dir", corpus, "--split", "valid")
        assert_clean(result, tmp_path)
        outcomes[result.returncode] += 1
        shutil.rmtree(corpus)
    assert outcomes[2] > 30


def test_corrupted_checkpoints(trained, synthetic_dir, tmp_path):
    rng = random.Random(SEED + 2)
    good = trained.read_bytes()
    outcomes = {0: 0, 1: 0, 2: 0}
    for case in range(60):
        path = tmp_path / f"ckpt-{case}.safetensors"
        path.write_bytes(mutate_bytes(good, rng))
        out = tmp_path / f"compact-{case}.safetensors"
        command = rng.choice([("eval", path, "--data-dir", synthetic_dir, "--split", "valid"),
                              ("compact", path, "-o", out)])
        result = cli_in_process(*command)
        assert_clean(result, tmp_path)
        outcomes[result.returncode] += 1
        if result.returncode != 0:
            assert not out.exists()
    assert outcomes[2] > 20


def test_every_command_s_options_given_junk_end_as_promised(tmp_path):
    """A seeded sample of tests/fuzz_cli.py's cases (every command's every option with junk values;
    `python tests/fuzz_cli.py` runs them all): each case succeeds or ends in one error line."""
    import fuzz_cli

    world = fuzz_cli.make_world(tmp_path)
    cases = fuzz_cli.sample(48, SEED)  # 3 a command
    assert {case.command for case in cases} == set(fuzz_cli.commands())  # every command covered
    assert len(fuzz_cli.commands()) >= 16
    outcomes, defects = fuzz_cli.fuzz(world, cases)
    assert not defects, "\n".join(defects)
    assert outcomes["handled"] == len(cases)
