"""A small generated LM corpus, so the toolkit runs (and its tests train) without any download.

Sentences come from a tiny probabilistic grammar with number agreement between subject and verb
and recursive prepositional phrases, so a recurrent model has real structure to learn: a 2x64 LSTM
reaches a perplexity far below the vocabulary size within a minute. The output is deterministic
for a given seed and written in PTB's format (``train.txt``/``valid.txt``/``test.txt``).
"""

from __future__ import annotations

import random
from pathlib import Path

_DETERMINERS = ("the", "a", "this", "every", "no", "some")
_PLURAL_DETERMINERS = ("the", "these", "many", "some", "N", "few")
_ADJECTIVES = ("big", "small", "old", "new", "red", "quiet", "fast", "local", "public", "strong", "early", "final")
_NOUNS = (
    "company", "market", "price", "share", "bank", "investor", "trader", "report", "plan", "bond",
    "analyst", "board", "rate", "fund", "deal", "index", "client", "firm", "loss", "gain",
)
_VERBS = (  # (singular, plural)
    ("buys", "buy"), ("sells", "sell"), ("expects", "expect"), ("reports", "report"), ("sees", "see"),
    ("holds", "hold"), ("raises", "raise"), ("cuts", "cut"), ("backs", "back"), ("blocks", "block"),
)
_INTRANSITIVE = (("rises", "rise"), ("falls", "fall"), ("waits", "wait"), ("grows", "grow"))
_ADVERBS = ("sharply", "slowly", "again", "today", "quickly", "N", "later")
_PREPOSITIONS = ("of", "in", "with", "for", "near", "after")


def _noun_phrase(rng: random.Random, depth: int) -> tuple[list[str], bool]:
    plural = rng.random() < 0.4
    words = [rng.choice(_PLURAL_DETERMINERS if plural else _DETERMINERS)]
    if rng.random() < 0.4:
        words.append(rng.choice(_ADJECTIVES))
    noun = rng.choice(_NOUNS)
    words.append(noun + "s" if plural else noun)
    if depth < 2 and rng.random() < 0.3:
        words.append(rng.choice(_PREPOSITIONS))
        words += _noun_phrase(rng, depth + 1)[0]
    return words, plural


def sentence(rng: random.Random) -> list[str]:
    subject, plural = _noun_phrase(rng, 0)
    if rng.random() < 0.7:
        verb = rng.choice(_VERBS)[plural]
        obj, _ = _noun_phrase(rng, 1)
        words = subject + [verb] + obj
    else:
        words = subject + [rng.choice(_INTRANSITIVE)[plural]]
    if rng.random() < 0.5:
        words.append(rng.choice(_ADVERBS))
    return words


def generate_corpus(directory: str | Path, seed: int = 0, sentences: tuple[int, int, int] = (8000, 800, 800)) -> Path:
    """Write train/valid/test files of generated sentences into ``directory``; returns it.

    Words of valid/test that never occur in train become ``<unk>``, as in PTB.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    splits = {
        name: [sentence(rng) for _ in range(count)] for name, count in zip(("train", "valid", "test"), sentences)
    }
    seen = {w for line in splits["train"] for w in line}
    # PTB's train file has <unk>; give ours some too, so held-out words have somewhere to go.
    for line in splits["train"][::50]:
        line[-1] = "<unk>"
    seen.add("<unk>")
    for name, lines in splits.items():
        text = "".join(" " + " ".join(w if w in seen else "<unk>" for w in line) + " \n" for line in lines)
        tmp = directory / f".{name}.txt.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(directory / f"{name}.txt")
    return directory
