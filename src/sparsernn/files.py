"""Files: atomic writes (a temporary file beside the target, fsync, rename: a killed process leaves the
previous file or the new one, never a torn one; a write that cannot happen is a one-line error), an
output that would replace a command's input refused, and YAML read strictly (a key written twice is
an error, not a silent last-wins)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from sparsernn.errors import ConfigError, SparsernnError


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


def refuse_overwriting_inputs(option: str, output: str | Path, inputs: list[str | Path]) -> None:
    """A command's output must not replace what it reads: the input files themselves (a checkpoint's
    JSON header beside it included) and the files of the run directory an input is or lies in (its
    other checkpoints, config and metrics). Compared as resolved paths, and as files where the output
    exists (a symbolic or hard link to an input is that input)."""
    target = Path(output).resolve()
    for item in map(Path, inputs):
        if item.is_dir():
            run, protected = item, set()
        else:
            run = item.parent if _is_run_directory(item.parent) else None
            protected = {item, item.with_suffix(".json")} if item.suffix == ".safetensors" else {item}
        if run is not None:
            protected |= {p for p in run.iterdir() if p.is_file()}
        for path in protected:
            if path.resolve() == target or (target.is_file() and path.is_file() and os.path.samefile(path, target)):
                what = "" if path.resolve() == item.resolve() else f" (its {path.name})" if run == item else \
                    f" ({path.name}{' of its run' if run else ''})"
                raise SparsernnError(f"{option} {output}: would overwrite the input {item}{what}; write elsewhere")


def _is_run_directory(directory: Path) -> bool:
    """A training run's directory (``sparsernn.runs`` names its files): its config or a checkpoint of it."""
    return any((directory / name).is_file() for name in ("config.yaml", "last.safetensors", "metrics.jsonl"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that writes one key twice."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(text: str, source: str | Path):
    """YAML as PyYAML's safe loader reads it, except that a key written twice in one mapping is an
    error (the safe loader keeps the last silently); every problem is one line naming ``source``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as exc:
        if exc.problem and "written twice" in exc.problem:
            raise ConfigError(f"{source} line {exc.problem_mark.line + 1}: {exc.problem}") from None
        raise ConfigError(f"{source}: is not valid YAML ({exc.problem})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{source}:{f' line {mark.line + 1}' if mark else ''} is not valid YAML") from None
