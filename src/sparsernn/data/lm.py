"""Word-level language-modelling corpora: vocabulary, token streams, batchify and BPTT windows.

A corpus directory holds three text files, one sentence per line, tokens separated by spaces:
``ptb.train.txt``/``ptb.valid.txt``/``ptb.test.txt`` (Mikolov's PTB names) or ``train.txt``/
``valid.txt``/``test.txt``. ``<eos>`` is appended to every line; the vocabulary is built on the
training file, ordered by descending frequency (ties by first appearance) so that word ids are
frequency ranks. Valid/test tokens outside the vocabulary are an error, not a silent ``<unk>``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sparsernn.data.download import PTB_SHA256, sha256_file
from sparsernn.errors import DataError

EOS = "<eos>"
SPLITS = ("train", "valid", "test")
# File names tried for each split, in order.
SPLIT_FILENAMES = {split: (f"ptb.{split}.txt", f"{split}.txt") for split in SPLITS}


@dataclass(frozen=True)
class Vocabulary:
    """Word <-> id mapping. ``words[i]`` is the word of id ``i``; ids are frequency ranks on train."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids  # type: ignore[attr-defined]

    def id(self, word: str) -> int:
        return self._ids[word]  # type: ignore[attr-defined]

    @classmethod
    def from_counts(cls, counts: Counter[str]) -> Vocabulary:
        # Counter preserves first-insertion order; sorted() is stable, so ties keep that order.
        return cls(tuple(sorted(counts, key=lambda w: -counts[w])))


@dataclass(frozen=True)
class Corpus:
    """The three splits of an LM corpus as 1-D int64 token streams over one vocabulary."""

    directory: Path
    vocab: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


def find_split_file(directory: Path, split: str) -> Path:
    for name in SPLIT_FILENAMES[split]:
        path = directory / name
        if path.is_file():
            return path
    expected = " or ".join(SPLIT_FILENAMES[split])
    raise DataError(f"{directory}: no {split} file; expected {expected}")


def read_lines(path: Path) -> list[list[str]]:
    """Tokenised lines of a corpus file, each ending with ``<eos>``; blank lines are skipped."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if b"\x00" in raw:
        raise DataError(f"{path}: binary data (NUL bytes); expected a UTF-8 text file, one sentence per line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not valid UTF-8; expected a text file, one sentence per line") from None
    lines = [line.split() + [EOS] for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path}: no tokens; expected one sentence per line")
    return lines


def encode(lines: Sequence[Sequence[str]], vocab: Vocabulary, path: Path) -> torch.Tensor:
    ids = []
    for number, line in enumerate(lines, start=1):
        for word in line:
            if word not in vocab:
                raise DataError(
                    f"{path} line {number}: token {word!r} is not in the training vocabulary "
                    f"({len(vocab)} words); map rare words to <unk> as the training file does"
                )
            ids.append(vocab.id(word))
    return torch.tensor(ids, dtype=torch.long)


def check_known_file(path: Path) -> None:
    """A file named like a standard PTB file must be that file, so results stay comparable."""
    want = PTB_SHA256.get(path.name)
    if want is not None and (got := sha256_file(path)) != want:
        raise DataError(
            f"{path}: not the standard PTB {path.name} (SHA-256 {got[:12]}..., expected {want[:12]}...); "
            f"a modified or other corpus must name its files train.txt, valid.txt and test.txt"
        )


def load_corpus(directory: str | Path) -> Corpus:
    """Read a corpus directory (see module docstring); errors are one-line ``DataError``s."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DataError(f"{directory}: corpus directory not found")
    paths = {split: find_split_file(directory, split) for split in SPLITS}
    lines = {split: read_lines(path) for split, path in paths.items()}
    counts: Counter[str] = Counter(word for line in lines["train"] for word in line)
    vocab = Vocabulary.from_counts(counts)
    # an unknown word is named with its line before a PTB-named file's checksum is compared
    streams = {split: encode(lines[split], vocab, paths[split]) for split in SPLITS}
    for path in paths.values():
        check_known_file(path)
    return Corpus(directory=directory, vocab=vocab, **streams)


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a token stream into ``batch_size`` contiguous streams: shape ``(steps, batch_size)``.

    Stream ``j`` is ``tokens[j*steps:(j+1)*steps]``; the remainder that does not fill a column is dropped.
    """
    steps = tokens.numel() // batch_size
    if steps < 2:
        raise DataError(f"{tokens.numel()} tokens cannot make {batch_size} streams of at least 2 tokens")
    return tokens[: steps * batch_size].view(batch_size, steps).t().contiguous()


def num_windows(stream_length: int, bptt: int) -> int:
    return -(-(stream_length - 1) // bptt)


def bptt_window(batched: torch.Tensor, index: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Window ``index``: inputs ``batched[i:i+n]`` and targets ``batched[i+1:i+1+n]`` (the next tokens)."""
    start = index * bptt
    length = min(bptt, batched.size(0) - 1 - start)
    return batched[start : start + length], batched[start + 1 : start + 1 + length]


def bptt_windows(batched: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All windows in order; the hidden state of one window is the initial state of the next."""
    for index in range(num_windows(batched.size(0), bptt)):
        yield bptt_window(batched, index, bptt)
