"""Where a search keeps its state: an Optuna storage (SQLite in the search directory, or any
SQLAlchemy URL), opened so that every way it can fail is one line naming ``--storage``.

A resumed search only reads: a file that is empty or not a SQLite database is refused before
anything is written into it (Optuna would otherwise lay a fresh schema over it).
"""

from __future__ import annotations

from pathlib import Path

import optuna

from sparsernn.errors import ConfigError, Failure

DB = "search.db"
SQLITE_HEADER = b"SQLite format 3\x00"


def storage_url(storage: str | None, out: Path) -> str:
    """The storage's SQLAlchemy URL: ``storage`` as given (a bare ``postgresql://`` driven by psycopg
    3, the postgres extra, also where SQLAlchemy < 2.1 would pick psycopg2), else SQLite in ``out``."""
    if storage is None:
        return f"sqlite:///{(out / DB).resolve()}"
    if storage.startswith("postgresql://"):
        return "postgresql+psycopg://" + storage.removeprefix("postgresql://")
    return storage


def check_url(url: str) -> None:
    """A URL SQLAlchemy can parse, of a dialect it knows and whose driver is installed."""
    import sqlalchemy as sa
    from sqlalchemy import exc

    try:
        parsed = sa.engine.make_url(url)
        parsed.get_dialect()
    except exc.NoSuchModuleError:  # (an ArgumentError too)
        raise ConfigError(f"--storage {_shown(url)!r}: unknown database kind {url.split(':', 1)[0]!r} (expected "
                          "sqlite or postgresql)") from None
    except exc.ArgumentError:
        raise ConfigError(f"--storage {_shown(url)!r}: not a database URL (expected e.g. sqlite:///path/search.db "
                          "or postgresql://user@host/db)") from None
    except ImportError:
        raise _driver_missing(url) from None


def _driver_missing(url: str) -> ConfigError:
    return ConfigError(f"--storage {_shown(url).split('://')[0]}: its database driver is not installed (PostgreSQL: "
                       "pip install 'sparsernn[postgres]')")


def check_sqlite_file(path: Path) -> None:
    """Refuse, without writing, a file that cannot hold a search: empty, or not a SQLite database."""
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header:
        raise ConfigError(f"{path}: empty, not a search database (a search killed before its first write "
                          "leaves nothing to resume; start it again with --out)")
    if header != SQLITE_HEADER:
        raise ConfigError(f"{path}: not a search database (not a SQLite file)")


def open_study(url: str, study_name: str, create: bool) -> optuna.Study:
    """The search's Optuna study at ``url``: created when ``create`` (and absent), else loaded (and it
    must exist). Every failure is a one-line error naming the storage."""
    from sqlalchemy import exc

    check_url(url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.is_file():
            check_sqlite_file(path)
        elif not create:
            raise ConfigError(f"{path}: no search to resume here (no such database)")
        elif not path.parent.is_dir():
            raise ConfigError(f"--storage {_shown(url)!r}: directory {path.parent} does not exist")
    sampler = optuna.samplers.RandomSampler(seed=0)  # candidates are enqueued: the study's sampler never proposes
    try:
        if create:
            return optuna.create_study(study_name=study_name, storage=url, direction="minimize", load_if_exists=True,
                                       sampler=sampler)
        return optuna.load_study(study_name=study_name, storage=url, sampler=sampler)
    except exc.ArgumentError as error:  # a URL SQLAlchemy parses but its dialect refuses (e.g. sqlite with a host)
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(f"--storage {_shown(url)!r}: not a database URL of its kind ({reason})") from None
    except KeyError:
        raise ConfigError(f"--storage {_shown(url)}: holds no search named {study_name!r} to resume") from None
    except exc.DatabaseError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
        if isinstance(error, exc.OperationalError):  # cannot connect or open: the work cannot be done
            raise Failure(f"--storage {_shown(url)}: cannot open the database ({reason})") from None
        raise ConfigError(f"--storage {_shown(url)}: not a usable search database ({reason})") from None
    except ImportError:
        raise _driver_missing(url) from None


def _shown(url: str) -> str:
    """The URL as the user gave it (``postgresql://``, not the driver ``storage_url`` names), without its
    password."""
    import sqlalchemy as sa

    try:
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for the message
        shown = url
    return "postgresql://" + shown.removeprefix("postgresql+psycopg://") if shown.startswith("postgresql+psycopg://") \
        else shown
