"""Atomic file writes: a temporary file beside the target, fsync, rename. A killed process leaves the
previous file or the new one, never a torn one; a write that cannot happen is a one-line error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sparsernn.errors import SparsernnError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: setting it to read it is not thread-safe


def ensure_directory(path: str | Path) -> Path:
    """``path`` as a directory, created with its parents if needed; one line when that is impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise SparsernnError(f"{path}: cannot create the directory ({blocker} is a file)") from None
    except OSError as exc:
        raise SparsernnError(f"{path}: cannot create the directory ({exc.strerror})") from None
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    ensure_directory(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise SparsernnError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # like any file the user writes (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise SparsernnError(f"{path}: cannot write ({exc.strerror})") from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
