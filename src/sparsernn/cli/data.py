"""Corpora: the ``data`` group (verify, download)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sparsernn.cli.app import err, out, print_table


def data_verify(
    data_dir: Annotated[Optional[str], typer.Option(help="PTB directory [default: searched]")] = None,
) -> None:
    """Check the PTB files against their SHA-256 checksums and read them."""
    from sparsernn.data import verify_ptb

    directory, digests, corpus = verify_ptb(data_dir)
    print_table(f"{directory}: standard PTB, checksums verified", ["file", "tokens (with <eos>)", "sha256"],
                [[name, f"{corpus.split(split).numel():,}", digest[:16] + "..."]
                 for split, (name, digest) in zip(("train", "valid", "test"), digests.items())], justify="left")
    out.print(f"vocabulary: {len(corpus.vocab):,} words")


def data_download(
    dest: Annotated[Path, typer.Option(help="where to put ptb.*.txt")] = Path("~/.cache/sparsernn/data/ptb"),
    url: Annotated[str, typer.Option(help="archive URL (file:// works)")] = "",
) -> None:
    """Download Mikolov's PTB archive, extract the LM files and verify their checksums."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from sparsernn.data import PTB_URL, download_ptb

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=err,
                  disable=not err.is_terminal) as bar:
        task = bar.add_task("PTB", total=None)
        target = download_ptb(dest, url or PTB_URL, progress=lambda done, total: bar.update(task, completed=done,
                                                                                        total=total))
    out.print(f"PTB verified in {target}; use --data-dir {target} or SPARSERNN_DATA={target.parent}")
