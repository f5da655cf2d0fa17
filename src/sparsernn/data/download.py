"""Fetch and verify the Penn Treebank LM corpus (Mikolov's ``simple-examples.tgz``).

Known files are checked by SHA-256: a corpus directory whose PTB files differ from the standard
ones is reported, never silently used as if it were PTB.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from sparsernn.errors import DataError
from sparsernn.files import atomic_write_bytes

PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
# The archive's member paths end with these names (``./simple-examples/data/ptb.train.txt``).
PTB_SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_files(directory: str | Path, expected: Mapping[str, str] = PTB_SHA256) -> dict[str, str]:
    """Check every expected file's SHA-256; returns ``{name: digest}`` or raises a one-line DataError."""
    directory = Path(directory)
    found = {}
    for name, want in expected.items():
        path = directory / name
        if not path.is_file():
            raise DataError(f"{path}: missing; expected the PTB file {name} (run `sparsernn data download`)")
        got = sha256_file(path)
        if got != want:
            raise DataError(f"{path}: SHA-256 {got[:12]}... does not match the standard PTB file ({want[:12]}...)")
        found[name] = got
    return found


def is_standard_ptb(directory: Path) -> bool:
    """True when the directory holds PTB-named files (they are then verified on load)."""
    return any((directory / name).is_file() for name in PTB_SHA256)


def _fetch(url: str, progress: Callable[[int, int | None], None] | None) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - user-chosen URL
            total = response.headers.get("Content-Length")
            total = int(total) if total else None
            buffer = io.BytesIO()
            while block := response.read(1 << 16):
                buffer.write(block)
                if progress is not None:
                    progress(buffer.tell(), total)
            return buffer.getvalue()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{url}: download failed ({reason})") from None


def download_ptb(
    dest: str | Path,
    url: str = PTB_URL,
    expected: Mapping[str, str] = PTB_SHA256,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download the archive, extract the three PTB files into ``dest`` and verify them.

    Only the expected members are read (by base name), never extracted by their archive paths, and
    each file lands atomically: an interrupted download leaves no partial corpus behind.
    """
    dest = Path(dest).expanduser()
    payload = _fetch(url, progress)  # nothing is created before the archive is in hand and verified
    try:
        archive = tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")
    except tarfile.TarError:
        raise DataError(f"{url}: not a tar archive") from None
    with archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile() and Path(m.name).name in expected}
        missing = sorted(set(expected) - set(members))
        if missing:
            raise DataError(f"{url}: archive lacks {', '.join(missing)}")
        contents = {name: archive.extractfile(member).read() for name, member in members.items()}  # type: ignore[union-attr]
    # Verify everything before writing anything: a bad archive leaves no partial corpus.
    for name, data in contents.items():
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected[name]:
            raise DataError(f"{url}: {name} has SHA-256 {digest[:12]}..., expected {expected[name][:12]}...")
    for name, data in contents.items():
        atomic_write_bytes(dest / name, data)
    return dest
