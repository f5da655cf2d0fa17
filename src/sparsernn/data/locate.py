"""Where an LM corpus is found when the user names none."""

from __future__ import annotations

import os
from pathlib import Path

from sparsernn.data.download import verify_files
from sparsernn.data.lm import SPLIT_FILENAMES, Corpus, load_corpus
from sparsernn.data.synthetic import generate_corpus
from sparsernn.errors import DataError

DATA_ENV = "SPARSERNN_DATA"
# Data roots searched, in order, after $SPARSERNN_DATA; each holds one folder per corpus (ptb/, wsj-pos/).
DEFAULT_DATA_ROOTS = ("data", "../shared/data", "~/.cache/sparsernn/data")
SYNTHETIC_DIR = "~/.cache/sparsernn/synthetic-v1"


def _has_train_file(directory: Path) -> bool:
    return any((directory / name).is_file() for name in SPLIT_FILENAMES["train"])


def data_roots() -> list[Path]:
    roots = [os.environ[DATA_ENV]] if os.environ.get(DATA_ENV) else []
    return [Path(r).expanduser() for r in (*roots, *DEFAULT_DATA_ROOTS)]


def find_corpus(name: str = "ptb") -> Path | None:
    """First ``<root>/<name>`` (or a root that is itself the corpus) holding a train file."""
    for root in data_roots():
        for candidate in (root / name, root):
            if _has_train_file(candidate):
                return candidate
    return None


def resolve_lm_dir(explicit: str | None, name: str = "ptb") -> tuple[Path, str | None]:
    """The corpus directory to use and, when it is not what the user named or PTB, a note saying so.

    An explicit directory is used as given (errors surface when it is read). Without one, the data
    roots are searched; failing that, a small generated corpus is written and used.
    """
    if explicit is not None:
        return Path(explicit).expanduser(), None
    found = find_corpus(name)
    if found is not None:
        return found, None
    synthetic = Path(SYNTHETIC_DIR).expanduser()
    if not _has_train_file(synthetic):
        generate_corpus(synthetic)
    searched = ", ".join(str(r / name) for r in data_roots())
    note = (
        f"no {name.upper()} corpus found (searched {searched}); using the generated corpus in {synthetic}. "
        f"Get PTB with `sparsernn data download` or point --data-dir / ${DATA_ENV} at it."
    )
    return synthetic, note


def verify_ptb(data_dir: str | Path | None = None) -> tuple[Path, dict[str, str], Corpus]:
    """The PTB corpus in ``data_dir`` (searched for when not given) checked against its checksums and
    read: ``(directory, {file: sha256}, corpus)``."""
    directory = Path(data_dir) if data_dir else find_corpus("ptb")
    if directory is None:
        raise DataError("no PTB corpus found; pass --data-dir or run `sparsernn data download`")
    digests = verify_files(directory)
    return directory, digests, load_corpus(directory)
