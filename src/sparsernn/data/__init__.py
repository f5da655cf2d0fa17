"""Corpora: reading, batching, locating and downloading."""

from sparsernn.data.download import PTB_SHA256, PTB_URL, download_ptb, verify_files
from sparsernn.data.lm import (
    EOS,
    Corpus,
    Vocabulary,
    batchify,
    bptt_window,
    bptt_windows,
    load_corpus,
    num_windows,
)
from sparsernn.data.locate import DATA_ENV, find_corpus, resolve_lm_dir, verify_ptb
from sparsernn.data.synthetic import generate_corpus

__all__ = [
    "DATA_ENV",
    "EOS",
    "PTB_SHA256",
    "PTB_URL",
    "Corpus",
    "Vocabulary",
    "batchify",
    "bptt_window",
    "bptt_windows",
    "download_ptb",
    "find_corpus",
    "generate_corpus",
    "load_corpus",
    "num_windows",
    "resolve_lm_dir",
    "verify_files",
    "verify_ptb",
]
