"""One driver per search: a lease row in the search's own database.

Two drivers pointed at the same search (the same Optuna storage and study) would race: both would
rank, eliminate and insert. The driver holds a lease, a row of ``sparsernn_leases`` in the storage's
database (SQLite or PostgreSQL alike), renewed by a heartbeat thread. Taking it is a compare-and-swap
(an ``UPDATE ... WHERE owner = <seen> AND heartbeat = <seen>``), atomic in any SQL database: of two
drivers starting at once, one wins. A lease is free when its heartbeat is older than ``ttl`` seconds
(a driver killed on another machine), or at once when its holder was a process on this machine that
no longer exists (a driver killed here resumes without waiting). Heartbeats are the drivers' own clocks:
machines that drive one search must agree on the time within ``ttl`` (NTP), and "this machine" is a
host name, so containers that share one must not share a search's drivers.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import sqlalchemy as sa

from sparsernn.errors import SparsernnError

TABLE = "sparsernn_leases"


class SearchLocked(SparsernnError):
    """Another live driver holds the search."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class Lease:
    """The lease on search ``name`` in the database at ``url``; ``with lease:`` holds it (heartbeat
    every ``ttl / 4`` seconds) and gives it back."""

    def __init__(self, url: str, name: str, ttl: float = 60.0, where: str = "") -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.table = sa.Table(TABLE, sa.MetaData(), sa.Column("search", sa.String(255), primary_key=True),
                              sa.Column("owner", sa.String(64), nullable=False),
                              sa.Column("host", sa.String(255), nullable=False),
                              sa.Column("pid", sa.Integer, nullable=False),
                              sa.Column("heartbeat", sa.Float, nullable=False))
        self.table.metadata.create_all(self.engine)
        self.name, self.ttl, self.where = name, ttl, where or name
        self.owner = uuid.uuid4().hex
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.lost = False  # set when the heartbeat finds another owner (this driver stalled past ttl)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _row(self) -> dict:
        return {"owner": self.owner, "host": self.host, "pid": self.pid, "heartbeat": time.time()}

    def acquire(self) -> None:
        """Take the lease or raise ``SearchLocked`` naming the live holder."""
        t = self.table
        try:
            with self.engine.begin() as conn:
                conn.execute(t.insert().values(search=self.name, **self._row()))
            return
        except sa.exc.IntegrityError:
            pass  # held before: free only if its holder is gone
        with self.engine.begin() as conn:
            held = conn.execute(sa.select(t).where(t.c.search == self.name)).mappings().first()
            if held is not None:
                age = time.time() - held["heartbeat"]
                gone = age > self.ttl or (held["host"] == self.host and held["pid"] != self.pid
                                          and not _alive(held["pid"])) or held["owner"] == self.owner
                if not gone:
                    raise SearchLocked(
                        f"{self.where}: another driver runs this search (process {held['pid']} on {held['host']}, "
                        f"heartbeat {age:.0f} s ago); stop it first, or wait {self.ttl:.0f} s after it died")
                taken = conn.execute(t.update().where(t.c.search == self.name, t.c.owner == held["owner"],
                                                      t.c.heartbeat == held["heartbeat"]).values(**self._row()))
                if taken.rowcount == 1:
                    return
        raise SearchLocked(f"{self.where}: another driver took this search at the same moment")

    def renew(self) -> bool:
        """Refresh the heartbeat; False (and ``lost``) when another driver holds the lease now."""
        t = self.table
        with self.engine.begin() as conn:
            renewed = conn.execute(t.update().where(t.c.search == self.name, t.c.owner == self.owner)
                                   .values(heartbeat=time.time())).rowcount == 1
        self.lost = self.lost or not renewed
        return renewed

    def release(self) -> None:
        """Give the lease back; a database that cannot be reached now leaves it to expire after ``ttl``
        (never hiding what ended the search)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        t = self.table
        try:
            with self.engine.begin() as conn:
                conn.execute(t.delete().where(t.c.search == self.name, t.c.owner == self.owner))
        except sa.exc.SQLAlchemyError:
            pass
        finally:
            self.engine.dispose()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self.renew():
                    return
            except sa.exc.SQLAlchemyError:  # the database is briefly unreachable: try again next beat
                continue

    def __enter__(self) -> Lease:
        self.acquire()
        self._thread = threading.Thread(target=self._beat, name=f"lease {self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
