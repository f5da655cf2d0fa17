"""Validation problems as one line: the first error of a pydantic ``ValidationError`` and the reading of
a YAML file, each worded the same way wherever a config, a search space or a command's settings are
checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from sparsernn.errors import ConfigError
from sparsernn.files import load_yaml


def validation_line(exc: ValidationError, *, unknown: str = "unknown field",
                    given: Literal["auto", "named", "never"] = "auto",
                    name: Callable[[tuple[str, ...]], str] | None = None) -> str:
    """The first problem of ``exc`` as one line, ``FIELD: what is wrong (got VALUE)``.

    ``FIELD`` is the error's location joined with dots, or what ``name`` makes of it (an option for a
    field); an extra key reads ``unknown``. The value given is shown: ``"auto"``, unless it is a mapping
    or the message already quotes it; ``"named"``, whenever there is a field name; ``"never"``.
    """
    error = exc.errors()[0]
    loc = tuple(str(part) for part in error["loc"])
    where = name(loc) if name is not None else ".".join(loc)
    message = unknown if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
    message = " ".join(message.split())
    value = error.get("input")
    shown = (bool(where) if given == "named" else
             given == "auto" and not isinstance(value, dict) and repr(value) not in message)
    return f"{where + ': ' if where else ''}{message}{f' (got {value!r})' if shown else ''}"


def read_yaml_file(path: str | Path, *, not_found: str | Callable[[], str], unreadable: str) -> Any:
    """A YAML file's content (read strictly, see ``files.load_yaml``); a file that is missing or cannot be
    read as UTF-8 is one ``ConfigError`` line: ``PATH: {not_found}`` or ``PATH: {unreadable} (why)``.
    ``not_found`` may be a function, called only then (a hint that costs a directory listing)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {not_found() if callable(not_found) else not_found}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {unreadable} ({exc})") from None
    return load_yaml(text, path)


def per_layer(values: Any, layers: int, what: str) -> list:
    """``values`` for each of ``layers`` recurrent layers: one value (or a list of one) for all, or one
    per layer; another count is a ``ValueError`` naming ``what`` (e.g. "unit targets")."""
    if not isinstance(values, (list, tuple)):
        return [values] * layers
    if len(values) == 1:
        return list(values) * layers
    if len(values) != layers:
        raise ValueError(f"{len(values)} {what} for {layers} recurrent layers")
    return list(values)
