"""`SQLiteStore`: the embedded outbox store, stdlib `sqlite3` in WAL mode.

Durability: with ``synchronous="FULL"`` (the default) every commit fsyncs the
write-ahead log before it returns, so a stored charge survives a process crash
*and* an OS crash or power loss (on storage that honours fsync). With
``"NORMAL"`` it survives a process crash, but the last commits may roll back
after a power loss. The file and its ``-wal``/``-shm`` files are mode 0600.

Leases: a claimed row records its sender (``owner``, its pid) and a deadline.
Another sender may take it once the deadline passes or once that pid is gone,
so a restart after SIGKILL resumes the dead process's rows at once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ._deliver import logger
from ._entry import OutboxEntry, OutboxStats, build_entry
from ._store import Claim, Outcome, check_same, derived_key

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS knai_outbox (
    key TEXT PRIMARY KEY,
    send_key TEXT NOT NULL,
    session_token TEXT,
    amount_tokens INTEGER NOT NULL,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    owner TEXT,
    owner_pid INTEGER,
    lease_until REAL,
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS knai_outbox_due ON knai_outbox (state, next_attempt_at);
"""
_COLUMNS = (
    "key, amount_tokens, model, state, attempts, created_at, result, error, retries, send_key"
)
# Connections a forked child must neither use nor close (closing could
# checkpoint or unlink the parent's WAL): kept referenced for the child's life.
_ABANDONED: list[sqlite3.Connection] = []


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SQLiteStore:
    """An outbox store in one SQLite file (created 0600 if absent).

    Args:
        path: The database file.
        synchronous: ``"FULL"`` (default: a returned `charge()` survives power
            loss) or ``"NORMAL"`` (survives a process crash only).
        lease: Seconds a claim stays with a sender whose process still runs.
        busy_timeout: Seconds to wait for another process's write lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        lease: float = 300.0,
        busy_timeout: float = 30.0,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if lease <= 0:
            raise ValueError(f"lease must be > 0, got {lease!r}")
        self.path: Path = Path(path)
        self.synchronous = synchronous
        self.lease = lease
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closer: weakref.finalize[[], SQLiteStore] | None = None
        self._owner = ""
        self._pid = 0
        self._new_owner()
        with self._lock:
            self._db()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, synchronous={self.synchronous!r})"

    def _new_owner(self) -> None:
        self._pid = os.getpid()
        self._owner = f"{self._pid}:{uuid.uuid4().hex[:12]}"

    def _db(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        # Create the file ourselves so it is 0600 from its first byte; SQLite
        # gives the -wal and -shm files the database file's permissions.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            mode = os.fstat(fd).st_mode & 0o777
        finally:
            os.close(fd)
        if mode & 0o077:
            logger.warning(
                "outbox: %s is mode %o: others may read the session tokens it holds (chmod 600 it)",
                self.path,
                mode,
            )
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.create_function("knai_alive", 1, _pid_alive)
        conn.executescript(_SCHEMA)
        self._conn = conn
        # A store dropped without close() closes its connection quietly, as
        # sqlite3 would, instead of a ResourceWarning (Python 3.13) at collection.
        self._closer = weakref.finalize(self, conn.close)
        # Not at interpreter exit: a sender thread may still be inside the
        # connection then, and closing it under that thread crashes sqlite.
        self._closer.atexit = False
        return conn

    # -- writing ----------------------------------------------------------------

    def add(
        self,
        key: str,
        session_token: str,
        amount_tokens: int,
        model: str,
        *,
        connection: Any = None,
    ) -> OutboxEntry:
        """Store a pending charge (see `Store.add`); one fsynced commit."""
        if connection is not None:
            raise ValueError("connection= is for the PostgreSQL store; SQLite writes alone")
        now = time.time()
        with self._lock:
            db = self._db()
            cursor = db.execute(
                "INSERT INTO knai_outbox (key, send_key, session_token, amount_tokens, model,"
                " state, created_at, updated_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, key, session_token, amount_tokens, model, now, now, now),
            )
            inserted = cursor.rowcount == 1
            existing = None if inserted else self._get(db, key)
        if existing is not None:
            return check_same(existing, amount_tokens, model)
        return build_entry(key, amount_tokens, model, "pending", 0, now, None, None, 0, key)

    def claim(self, limit: int) -> list[Claim]:
        """Lease up to `limit` due pending charges, oldest first."""
        return self.exchange((), limit)

    def settle(self, outcomes: Sequence[Outcome]) -> None:
        """Record outcomes in one transaction (see `Store.settle`)."""
        if outcomes:
            self.exchange(outcomes, 0)

    def exchange(self, outcomes: Sequence[Outcome], limit: int) -> list[Claim]:
        """`settle(outcomes)` then `claim(limit)`, in one transaction (one fsync)."""
        now = time.time()
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                for o in outcomes:
                    _settle_one(db, o, now, self._owner)
                rows = []
                if limit > 0:
                    rows = db.execute(
                        "SELECT key, send_key, session_token, amount_tokens, model, attempts"
                        " FROM knai_outbox WHERE state = 'pending' AND next_attempt_at <= ?"
                        " AND session_token IS NOT NULL"
                        " AND (owner IS NULL OR lease_until < ? OR NOT knai_alive(owner_pid))"
                        " ORDER BY created_at LIMIT ?",
                        (now, now, limit),
                    ).fetchall()
                    db.executemany(
                        "UPDATE knai_outbox SET owner = ?, owner_pid = ?, lease_until = ?,"
                        " attempts = attempts + 1, updated_at = ? WHERE key = ?",
                        [(self._owner, self._pid, now + self.lease, now, r[0]) for r in rows],
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return [Claim(r[0], r[1], r[2], r[3], r[4], r[5] + 1) for r in rows]

    def retry_dead(self, key: str, session_token: str | None = None) -> OutboxEntry:
        """Make a dead charge pending under its next derived key (see `Store.retry_dead`)."""
        now = time.time()
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT state, retries, session_token IS NOT NULL FROM knai_outbox"
                    " WHERE key = ?",
                    (key,),
                ).fetchone()
                _check_retryable(key, row, session_token)
                retries = int(row[1]) + 1
                db.execute(
                    "UPDATE knai_outbox SET state = 'pending', retries = ?, send_key = ?,"
                    " session_token = COALESCE(?, session_token), error = NULL,"
                    " next_attempt_at = ?, updated_at = ? WHERE key = ?",
                    (retries, derived_key(key, retries), session_token, now, now, key),
                )
                entry = self._get(db, key)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        assert entry is not None
        return entry

    def release(self) -> None:
        """Give up this store's leases on rows it is not delivering any more."""
        with self._lock:
            self._db().execute(
                "UPDATE knai_outbox SET owner = NULL, owner_pid = NULL, lease_until = NULL"
                " WHERE owner = ? AND state = 'pending'",
                (self._owner,),
            )

    # -- reading ----------------------------------------------------------------

    def get(self, key: str) -> OutboxEntry | None:
        """The entry under `key`, or None."""
        with self._lock:
            return self._get(self._db(), key)

    def entries(self, state: str, limit: int | None = None) -> list[OutboxEntry]:
        """Entries in `state`, oldest first (at most `limit`)."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    f"SELECT {_COLUMNS} FROM knai_outbox WHERE state = ?"  # noqa: S608
                    " ORDER BY created_at LIMIT ?",
                    (state, -1 if limit is None else limit),
                )
                .fetchall()
            )
        return [build_entry(*row) for row in rows]

    def stats(self) -> OutboxStats:
        """Counts per state and the oldest pending charge's age in seconds."""
        with self._lock:
            db = self._db()
            counts = dict(db.execute("SELECT state, count(*) FROM knai_outbox GROUP BY state"))
            oldest = db.execute(
                "SELECT min(created_at) FROM knai_outbox WHERE state = 'pending'"
            ).fetchone()[0]
        return OutboxStats(
            pending=counts.get("pending", 0),
            sent=counts.get("sent", 0),
            dead=counts.get("dead", 0),
            oldest_pending_age=None if oldest is None else max(0.0, time.time() - oldest),
        )

    def _get(self, db: sqlite3.Connection, key: str) -> OutboxEntry | None:
        row = db.execute(
            f"SELECT {_COLUMNS} FROM knai_outbox WHERE key = ?",  # noqa: S608
            (key,),
        ).fetchone()
        return None if row is None else build_entry(*row)

    # -- lifecycle --------------------------------------------------------------

    def after_fork(self) -> None:
        """In a forked child: leave the parent's connection alone; reconnect on use."""
        if self._conn is not None:
            _ABANDONED.append(self._conn)
        if self._closer is not None:
            self._closer.detach()  # the parent's connection is not the child's to close
        self._conn = None
        self._lock = threading.Lock()
        self._new_owner()

    def close(self) -> None:
        """Close the connection (it reopens if the store is used again)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            if self._closer is not None:
                self._closer.detach()
            self._conn = None


def _settle_one(db: sqlite3.Connection, o: Outcome, now: float, owner: str) -> None:
    if o.state == "pending":
        # Only this sender's own lease is released: another may hold it by now.
        db.execute(
            "UPDATE knai_outbox SET owner = NULL, owner_pid = NULL, lease_until = NULL,"
            " next_attempt_at = ?, updated_at = ?"
            " WHERE key = ? AND send_key = ? AND state = 'pending' AND owner = ?",
            (o.retry_at, now, o.key, o.send_key, owner),
        )
        return
    db.execute(
        "UPDATE knai_outbox SET state = ?, result = ?, error = ?,"
        " session_token = CASE WHEN ? THEN NULL ELSE session_token END,"
        " owner = NULL, owner_pid = NULL, lease_until = NULL, updated_at = ?"
        " WHERE key = ? AND send_key = ? AND state = 'pending'",
        (o.state, o.result_json, o.error_json, o.purge_token, now, o.key, o.send_key),
    )


def _check_retryable(key: str, row: Any, session_token: str | None) -> None:
    if row is None:
        raise KeyError(key)
    if row[0] != "dead":
        raise ValueError(f"charge {key!r} is {row[0]}, not dead: only dead charges are retried")
    if not row[2] and session_token is None:
        raise ValueError(
            f"charge {key!r} has no session token left (its session ended):"
            " pass retry_dead(key, session_token=...) with a new session's token"
        )
