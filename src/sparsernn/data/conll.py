"""Tagged corpora in two-column CoNLL form (``token<TAB>tag`` a line, a blank line between sentences),
such as WSJ part-of-speech data: reading with one-line errors, vocabularies, and the standard split."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from sparsernn.errors import DataError

PAD, UNK = "<pad>", "<unk>"
# suffixes that mark a word's part of speech (longest first): an unknown word keeps the one it ends with
SUFFIXES = ("ation", "ment", "ness", "able", "ible", "ing", "ion", "ity", "ive", "ous", "ful", "ism", "ist", "est",
            "ed", "ly", "er", "al", "ic", "es", "s", "y")
# split -> file names looked for, in order (WSJ's, then generic ones)
SPLIT_FILES = {"train": ("wsj_train.conll", "train.conll"), "valid": ("wsj_valid.conll", "valid.conll"),
               "test": ("wsj_test.conll", "test.conll")}

Sentence = tuple[list[str], list[str]]


def read_conll(path: str | Path) -> list[Sentence]:
    """Sentences of ``(tokens, tags)``. A malformed line is a one-line ``DataError`` naming the file and
    line: every non-blank line must be a token and a tag separated by one tab (spaces inside a
    token are kept)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1].strip():
            raise DataError(f"{path} line {number}: expected 'token<TAB>tag', got {line[:60]!r}")
        tokens.append(parts[0])
        tags.append(parts[1].strip())
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise DataError(f"{path}: no sentences (an empty file?)")
    return sentences


def unknown_signature(token: str, suffix: bool = True) -> str:
    """The class an unknown word is read as, from its shape: capitals, digits, a hyphen, a telling
    suffix (``<unk-Cap-ing>``). Without characters in the model this is what tags unseen words: the
    word seen once in training trains its class's embedding, which every unseen word of that shape
    then gets (the signatures of Petrov et al.'s parsers, simplified). ``suffix=False``: the coarser
    class without the suffix, what a word falls back to when its full class was never trained."""
    parts = []
    if any(c.isdigit() for c in token):
        parts.append("num")
    if token[:1].isupper():
        parts.append("CAPS" if len(token) > 1 and token.isupper() else "Cap")
    if "-" in token:
        parts.append("hyph")
    lower = token.lower()
    ending = next((x for x in SUFFIXES if lower.endswith(x) and len(lower) > len(x) + 2), None) if suffix else None
    if ending is not None and not parts[:1] == ["num"]:
        parts.append(ending)
    return f"<unk-{'-'.join(parts)}>" if parts else UNK


def word_id(token: str, ids: dict[str, int]) -> int:
    """A token's id in vocabulary ``ids``: itself, else its unknown-word class, else that class without
    the suffix, else ``<unk>``."""
    found = ids.get(token)
    if found is not None:
        return found
    return ids.get(unknown_signature(token), ids.get(unknown_signature(token, suffix=False), ids[UNK]))


@dataclass
class TaggedCorpus:
    """Word and tag vocabularies from the training split (word ids 0 and 1 are padding and unknown; then
    the unknown-word classes of the training split's single words; then the words seen at least twice,
    by training frequency) and each split as a list of ``(word ids, tag ids)`` tensors."""

    directory: Path
    words: tuple[str, ...]
    tags: tuple[str, ...]
    train: list[tuple[torch.Tensor, torch.Tensor]]
    valid: list[tuple[torch.Tensor, torch.Tensor]]
    test: list[tuple[torch.Tensor, torch.Tensor]]

    def split(self, name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def encode(self, tokens: list[str]) -> torch.Tensor:
        ids = {w: i for i, w in enumerate(self.words)}
        return torch.tensor([word_id(t, ids) for t in tokens], dtype=torch.long)


def read_sentences(path: str | Path) -> list[list[str]]:
    """A text file of sentences to tag, one a line, tokens separated by spaces (blank lines skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path}: no sentences (one a line expected)")
    return lines


def split_file(directory: Path, split: str) -> Path:
    for name in SPLIT_FILES[split]:
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{directory}: no {split} file (looked for {', '.join(SPLIT_FILES[split])})")


def load_tagged_corpus(directory: str | Path) -> TaggedCorpus:
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory of CoNLL files")
    raw = {split: read_conll(split_file(directory, split)) for split in SPLIT_FILES}
    counts = Counter(token for tokens, _ in raw["train"] for token in tokens)
    # words seen once in training are read as their unknown-word class there, so those embeddings are
    # trained (and are what unseen words in valid, test and tagged text get)
    # (only classes some singleton is read as: each is trained; an unseen word whose class is not among
    # them falls back to the class without its suffix when that one is)
    classes = sorted({unknown_signature(w) for w in counts if counts[w] == 1} - {UNK})
    words = (PAD, UNK, *classes, *sorted((w for w in counts if counts[w] > 1), key=lambda w: -counts[w]))
    tags = tuple(sorted({tag for _, tags in raw["train"] for tag in tags}))
    word_ids = {w: i for i, w in enumerate(words)}
    tag_ids = {t: i for i, t in enumerate(tags)}

    def encode(split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        encoded = []
        for number, (tokens, labels) in enumerate(raw[split], start=1):
            unknown = [t for t in labels if t not in tag_ids]
            if unknown:
                raise DataError(f"{split_file(directory, split)}: sentence {number} has tag {unknown[0]!r}, "
                                f"which the training split never uses")
            encoded.append((torch.tensor([word_id(t, word_ids) for t in tokens], dtype=torch.long),
                            torch.tensor([tag_ids[t] for t in labels], dtype=torch.long)))
        return encoded

    return TaggedCorpus(directory, words, tags, encode("train"), encode("valid"), encode("test"))


def pad_batch(sentences: list[tuple[torch.Tensor, torch.Tensor]], pad_tag: int = -100):
    """``(words (T, B), tags (T, B), lengths (B,))``, words padded with 0 and tags with ``pad_tag``
    (ignored by the loss and by accuracy)."""
    lengths = torch.tensor([len(w) for w, _ in sentences])
    words = torch.zeros(int(lengths.max()), len(sentences), dtype=torch.long)
    tags = torch.full_like(words, pad_tag)
    for b, (w, t) in enumerate(sentences):
        words[: len(w), b] = w
        tags[: len(t), b] = t
    return words, tags, lengths
