from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import torch

from sparsernn.data import (
    EOS,
    batchify,
    bptt_windows,
    download_ptb,
    generate_corpus,
    load_corpus,
    num_windows,
    verify_files,
)
from sparsernn.data.locate import resolve_lm_dir
from sparsernn.errors import DataError

from conftest import SHARED_PTB


def write_corpus(directory: Path, train: str, valid: str = "a b\n", test: str = "b a\n", names=("train", "valid", "test")):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, (train, valid, test)):
        (directory / f"{name}.txt").write_text(text)
    return directory


@pytest.mark.parametrize("length,batch,bptt", [(103, 4, 5), (100, 5, 7), (64, 1, 64), (40, 3, 1)])
def test_bptt_targets_are_inputs_shifted_by_one_across_windows_and_streams(length, batch, bptt):
    tokens = torch.arange(1000, 1000 + length)
    batched = batchify(tokens, batch)
    steps = length // batch
    assert batched.shape == (steps, batch)
    windows = list(bptt_windows(batched, bptt))
    assert len(windows) == num_windows(steps, bptt)
    inputs = torch.cat([x for x, _ in windows])
    targets = torch.cat([y for _, y in windows])
    for stream in range(batch):
        expected = tokens[stream * steps : (stream + 1) * steps]  # contiguous, streams follow each other
        assert torch.equal(inputs[:, stream], expected[:-1])
        assert torch.equal(targets[:, stream], expected[1:])
    # windows tile the stream: each window's first target follows its last input's position
    for (x0, y0), (x1, _) in zip(windows, windows[1:]):
        assert torch.equal(y0[-1], x1[0])


def test_vocabulary_is_built_on_train_by_frequency_with_eos(tmp_path):
    corpus = load_corpus(write_corpus(tmp_path, "b a b\nc b\n", "a b\n", "c\n"))
    assert corpus.vocab.words == ("b", EOS, "a", "c")
    assert corpus.train.tolist() == [0, 2, 0, 1, 3, 0, 1]
    assert corpus.test.tolist() == [3, 1]


def test_ptb_named_files_are_checked_against_the_standard_checksums(tmp_path):
    write_corpus(tmp_path, "x y\n", "x\n", "y\n", names=("ptb.train", "ptb.valid", "ptb.test"))
    with pytest.raises(DataError, match=r"ptb\.train\.txt: not the standard PTB ptb\.train\.txt \(SHA-256 [0-9a-f]{12}\.\.\., expected"):
        load_corpus(tmp_path)


@pytest.mark.skipif(not SHARED_PTB.is_dir(), reason="needs ../shared/data/ptb")
def test_real_ptb_loads_with_standard_sizes():
    corpus = load_corpus(SHARED_PTB)
    assert len(corpus.vocab) == 10000
    assert corpus.train.numel() == 887521 + 42068  # words + one <eos> per line
    assert corpus.valid.numel() == 70390 + 3370
    assert corpus.test.numel() == 78669 + 3761
    assert verify_files(SHARED_PTB).keys() == {"ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"}


def test_out_of_vocabulary_token_is_an_error_naming_file_line_and_token(tmp_path):
    write_corpus(tmp_path, "a b\nb a\n", "a b\nb zebra a\n")
    with pytest.raises(DataError) as info:
        load_corpus(tmp_path)
    message = str(info.value)
    assert "valid.txt line 2" in message and "'zebra'" in message and "not in the training vocabulary" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "setup,expected",
    [
        (lambda d: None, r"corpus directory not found"),
        (lambda d: (d.mkdir(), (d / "train.txt").write_text("a\n")), r"no valid file; expected ptb\.valid\.txt or valid\.txt"),
        (lambda d: write_corpus(d, "\n  \n"), r"train\.txt: no tokens; expected one sentence per line"),
        (lambda d: (write_corpus(d, "a\n"), (d / "train.txt").write_bytes(b"a b\n\xff\xfe c\n")),
         r"train\.txt line 2: not valid UTF-8"),
        (lambda d: (write_corpus(d, "a\n"), (d / "test.txt").write_bytes(b"\x00\x01\x02")),
         r"test\.txt: binary data"),
    ],
    ids=["missing-dir", "missing-split", "empty", "not-utf8", "binary"],
)
def test_bad_corpus_gives_one_line_error(tmp_path, setup, expected):
    directory = tmp_path / "corpus"
    setup(directory)
    with pytest.raises(DataError, match=expected) as info:
        load_corpus(directory)
    assert "\n" not in str(info.value)
    assert str(directory) in str(info.value)


def test_generated_corpus_is_deterministic_and_closed_over_train_vocab(tmp_path):
    a = load_corpus(generate_corpus(tmp_path / "a", seed=5, sentences=(500, 50, 50)))
    b = load_corpus(generate_corpus(tmp_path / "b", seed=5, sentences=(500, 50, 50)))
    assert a.vocab == b.vocab and torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert 50 < len(a.vocab) < 200


def test_without_data_the_generated_corpus_is_used_and_said(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data, no ../shared/data
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPARSERNN_DATA", raising=False)
    directory, note = resolve_lm_dir(None)
    assert note is not None and "no PTB corpus found" in note and str(directory) in note
    assert load_corpus(directory).train.numel() > 10000


def test_data_env_variable_points_at_the_data_root(tmp_path, monkeypatch):
    write_corpus(tmp_path / "root" / "ptb", "a b\n")
    monkeypatch.setenv("SPARSERNN_DATA", str(tmp_path / "root"))
    assert resolve_lm_dir(None) == (tmp_path / "root" / "ptb", None)


def _archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./simple-examples/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_download_extracts_and_verifies_from_a_file_url(tmp_path):
    files = {"ptb.train.txt": b"a b\n", "ptb.valid.txt": b"a\n", "ptb.test.txt": b"b\n", "README": b"x"}
    (tmp_path / "simple-examples.tgz").write_bytes(_archive(files))
    expected = {n: hashlib.sha256(d).hexdigest() for n, d in files.items() if n.startswith("ptb")}
    dest = download_ptb(tmp_path / "out", url=(tmp_path / "simple-examples.tgz").as_uri(), expected=expected)
    assert sorted(p.name for p in dest.iterdir()) == sorted(expected)
    assert verify_files(dest, expected) == expected
    # a corrupted file is reported, naming the file
    (dest / "ptb.valid.txt").write_bytes(b"tampered\n")
    with pytest.raises(DataError, match=r"ptb\.valid\.txt: SHA-256 [0-9a-f]{12}\.\.\. does not match"):
        verify_files(dest, expected)


def test_download_refuses_an_archive_with_wrong_checksums(tmp_path):
    (tmp_path / "a.tgz").write_bytes(_archive({"ptb.train.txt": b"x\n", "ptb.valid.txt": b"y\n", "ptb.test.txt": b"z\n"}))
    with pytest.raises(DataError, match=r"ptb\.(train|valid|test)\.txt has SHA-256"):
        download_ptb(tmp_path / "out", url=(tmp_path / "a.tgz").as_uri())  # the real PTB checksums
    assert not (tmp_path / "out").exists()  # a failed download leaves nothing behind, not even the directory


def test_download_of_a_missing_url_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"download failed"):
        download_ptb(tmp_path, url=(tmp_path / "nothing.tgz").as_uri())


@pytest.mark.skipif(not SHARED_PTB.is_dir(), reason="needs ../shared/data/ptb")
def test_download_of_the_real_archive_layout_verifies_against_the_real_checksums(tmp_path):
    files = {f"ptb.{s}.txt": (SHARED_PTB / f"ptb.{s}.txt").read_bytes() for s in ("train", "valid", "test")}
    (tmp_path / "simple-examples.tgz").write_bytes(_archive(files))
    dest = download_ptb(tmp_path / "ptb", url=(tmp_path / "simple-examples.tgz").as_uri())
    assert len(load_corpus(dest).vocab) == 10000
