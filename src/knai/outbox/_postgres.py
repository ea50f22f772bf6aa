"""`PostgresStore`: one table shared by many senders, for providers running many instances.

Senders claim rows with ``FOR UPDATE SKIP LOCKED``, so concurrent claims never
wait on each other nor take the same row. A claim stays valid while its sender
lives: each store holds a session-level advisory lock on its owner id on a
connection of its own, and a row whose owner's lock is gone (the process died,
its connection dropped) is claimable again at once. ``charge(...,
connection=conn)`` inserts within the caller's open transaction.

Needs ``pip install "knai-provider[postgres]"`` (psycopg 3).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from ._entry import OutboxEntry, OutboxStats, build_entry
from ._store import Claim, Outcome, check_same, derived_key

if TYPE_CHECKING:
    import psycopg
    from typing_extensions import LiteralString

__all__ = ["PostgresStore"]

# First key of the owners' advisory locks: "knai" in ASCII.
_LOCK_SPACE = 0x6B6E6169
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_NOW: Final = "extract(epoch from clock_timestamp())"
_COLUMNS: Final = (
    "key, amount_tokens, model, state, attempts, created_at, result, error, retries, send_key"
)
_ABANDONED: list[object] = []


# `_sql(text)` is `text`, typed as the literal query psycopg's types ask for:
# its one non-literal part is the table's name, which `PostgresStore` checks
# against `_TABLE_NAME` before any query is built. (A cast would do for
# pyright, but mypy, which reads LiteralString as str, calls it redundant.)
if TYPE_CHECKING:

    def _sql(text: str) -> LiteralString: ...

else:

    def _sql(text: str) -> str:
        return text


def _valid_table(table: object) -> bool:
    # Checked at run time: an untyped caller may pass anything.
    return isinstance(table, str) and _TABLE_NAME.match(table) is not None


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            'the PostgreSQL outbox store needs psycopg: pip install "knai-provider[postgres]"'
        ) from exc
    return psycopg


class PostgresStore:
    """An outbox store in one PostgreSQL table (created if absent).

    Args:
        url: A ``postgresql://`` connection URL (libpq's format).
        table: The table's name (lowercase letters, digits, underscores).
        lease: Seconds after which a claim lapses even if its sender still lives.
    """

    def __init__(self, url: str, *, table: str = "knai_outbox", lease: float = 300.0) -> None:
        if not _valid_table(table):
            raise ValueError(f"table must be a lowercase SQL identifier, got {table!r}")
        if lease <= 0:
            raise ValueError(f"lease must be > 0, got {lease!r}")
        self._psycopg = _import_psycopg()
        self._url = url
        self.table = table
        self.lease = lease
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._owner_conn: psycopg.Connection[Any] | None = None
        self._owner = 0
        t = table
        self._sql_insert: LiteralString = _sql(
            f"INSERT INTO {t} (key, send_key, session_token, amount_tokens, model, state,"  # noqa: S608
            f" created_at, updated_at, next_attempt_at) VALUES (%s, %s, %s, %s, %s, 'pending',"
            f" {_NOW}, {_NOW}, {_NOW}) ON CONFLICT (key) DO NOTHING RETURNING created_at"
        )
        self._sql_get: LiteralString = _sql(f"SELECT {_COLUMNS} FROM {t} WHERE key = %s")  # noqa: S608
        with self._lock:
            self._db().execute(
                _sql(
                    f"CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, send_key text NOT NULL,"
                    " session_token text, amount_tokens bigint NOT NULL, model text NOT NULL,"
                    " state text NOT NULL, attempts integer NOT NULL DEFAULT 0,"
                    " retries integer NOT NULL DEFAULT 0, created_at double precision NOT NULL,"
                    " updated_at double precision NOT NULL,"
                    " next_attempt_at double precision NOT NULL, owner bigint,"
                    " lease_until double precision, result text, error text)"
                )
            )
            self._db().execute(
                _sql(f"CREATE INDEX IF NOT EXISTS {t}_due ON {t} (state, next_attempt_at)")
            )

    def __repr__(self) -> str:
        # The URL may carry a password: never shown.
        return f"PostgresStore(table={self.table!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = self._psycopg.connect(self._url, autocommit=True)
        return conn

    def _db(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = self._conn = self._connect()
        return conn

    def _owner_id(self) -> int:
        # Hold the advisory lock that keeps this store's claims alive; take a
        # new id if the connection holding it was lost.
        if self._owner_conn is None or self._owner_conn.closed or self._owner_conn.broken:
            conn = self._connect()
            while True:
                owner = secrets.randbelow(2**31 - 2) + 1
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(%s::int, %s::int)", (_LOCK_SPACE, owner)
                ).fetchone()
                if row and row[0]:
                    break
            self._owner_conn, self._owner = conn, owner
        return self._owner

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
        """Store a pending charge; with `connection`, inside that connection's transaction."""
        params = (key, key, session_token, amount_tokens, model)
        if connection is not None:
            row = connection.execute(self._sql_insert, params).fetchone()
            existing = None if row else connection.execute(self._sql_get, (key,)).fetchone()
        else:
            with self._lock:
                db = self._db()
                row = db.execute(self._sql_insert, params).fetchone()
                existing = None if row else db.execute(self._sql_get, (key,)).fetchone()
        return self._added(key, amount_tokens, model, row, existing)

    async def add_async(
        self,
        key: str,
        session_token: str,
        amount_tokens: int,
        model: str,
        *,
        connection: Any,
    ) -> OutboxEntry:
        """`add` within an ``AsyncConnection``'s open transaction (for `AsyncOutbox`)."""
        params = (key, key, session_token, amount_tokens, model)
        row = await (await connection.execute(self._sql_insert, params)).fetchone()
        existing = None
        if not row:
            existing = await (await connection.execute(self._sql_get, (key,))).fetchone()
        return self._added(key, amount_tokens, model, row, existing)

    def _added(
        self, key: str, amount_tokens: int, model: str, row: Any, existing: Any
    ) -> OutboxEntry:
        if existing is not None:
            return check_same(build_entry(*existing), amount_tokens, model)
        return build_entry(key, amount_tokens, model, "pending", 0, row[0], None, None, 0, key)

    def claim(self, limit: int) -> list[Claim]:
        """Lease up to `limit` due pending charges, skipping rows other senders hold."""
        return self.exchange((), limit)

    def settle(self, outcomes: Sequence[Outcome]) -> None:
        """Record outcomes in one transaction (see `Store.settle`)."""
        if outcomes:
            self.exchange(outcomes, 0)

    def exchange(self, outcomes: Sequence[Outcome], limit: int) -> list[Claim]:
        """`settle(outcomes)` then `claim(limit)`, in one transaction."""
        t = self.table
        rows: list[Any] = []
        with self._lock:
            owner = self._owner_id()
            db = self._db()
            with db.transaction():
                for o in outcomes:
                    self._settle_one(db, o)
                if limit > 0:
                    rows = db.execute(
                        _sql(
                            f"WITH live AS (SELECT objid::bigint AS owner FROM pg_locks"  # noqa: S608
                            " WHERE locktype = 'advisory' AND classid::bigint = %(space)s"
                            " AND objsubid = 2 AND granted)"
                            f" , claimed AS (UPDATE {t} SET owner = %(me)s,"
                            f" lease_until = {_NOW} + %(lease)s,"
                            f" attempts = attempts + 1, updated_at = {_NOW}"
                            f" WHERE key IN (SELECT key FROM {t} WHERE state = 'pending'"
                            f" AND next_attempt_at <= {_NOW} AND session_token IS NOT NULL"
                            f" AND (owner IS NULL OR lease_until < {_NOW}"
                            " OR owner NOT IN (SELECT owner FROM live))"
                            " ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
                            " RETURNING key, send_key, session_token, amount_tokens, model,"
                            " attempts, created_at) SELECT key, send_key, session_token,"
                            " amount_tokens, model, attempts FROM claimed ORDER BY created_at"
                        ),
                        {"space": _LOCK_SPACE, "me": owner, "lease": self.lease, "limit": limit},
                    ).fetchall()
        return [Claim(r[0], r[1], r[2], int(r[3]), r[4], int(r[5])) for r in rows]

    def _settle_one(self, db: psycopg.Connection[Any], o: Outcome) -> None:
        t = self.table
        if o.state == "pending":
            # Only this sender's own lease is released: another may hold it by now.
            db.execute(
                _sql(
                    f"UPDATE {t} SET owner = NULL, lease_until = NULL,"  # noqa: S608
                    f" next_attempt_at = %s, updated_at = {_NOW} WHERE key = %s"
                    " AND send_key = %s AND state = 'pending' AND owner = %s"
                ),
                (o.retry_at, o.key, o.send_key, self._owner),
            )
            return
        db.execute(
            _sql(
                f"UPDATE {t} SET state = %s, result = %s, error = %s,"  # noqa: S608
                " session_token = CASE WHEN %s THEN NULL ELSE session_token END,"
                f" owner = NULL, lease_until = NULL, updated_at = {_NOW}"
                " WHERE key = %s AND send_key = %s AND state = 'pending'"
            ),
            (o.state, o.result_json, o.error_json, o.purge_token, o.key, o.send_key),
        )

    def retry_dead(self, key: str, session_token: str | None = None) -> OutboxEntry:
        """Make a dead charge pending under its next derived key (see `Store.retry_dead`)."""
        t = self.table
        with self._lock:
            db = self._db()
            with db.transaction():
                row = db.execute(
                    _sql(
                        f"SELECT state, retries, session_token IS NOT NULL FROM {t}"  # noqa: S608
                        " WHERE key = %s FOR UPDATE"
                    ),
                    (key,),
                ).fetchone()
                if row is None:
                    raise KeyError(key)
                if row[0] != "dead":
                    raise ValueError(
                        f"charge {key!r} is {row[0]}, not dead: only dead charges are retried"
                    )
                if not row[2] and session_token is None:
                    raise ValueError(
                        f"charge {key!r} has no session token left (its session ended):"
                        " pass retry_dead(key, session_token=...) with a new session's token"
                    )
                retries = int(row[1]) + 1
                db.execute(
                    _sql(
                        f"UPDATE {t} SET state = 'pending', retries = %s, send_key = %s,"  # noqa: S608
                        " session_token = COALESCE(%s, session_token), error = NULL,"
                        f" next_attempt_at = {_NOW}, updated_at = {_NOW} WHERE key = %s"
                    ),
                    (retries, derived_key(key, retries), session_token, key),
                )
                found = db.execute(self._sql_get, (key,)).fetchone()
        assert found is not None
        return build_entry(*found)

    def release(self) -> None:
        """Give up this store's leases on rows it is not delivering any more."""
        with self._lock:
            if self._owner:
                self._db().execute(
                    _sql(
                        f"UPDATE {self.table} SET owner = NULL, lease_until = NULL"  # noqa: S608
                        " WHERE owner = %s AND state = 'pending'"
                    ),
                    (self._owner,),
                )

    # -- reading ----------------------------------------------------------------

    def get(self, key: str) -> OutboxEntry | None:
        """The entry under `key`, or None."""
        with self._lock:
            row = self._db().execute(self._sql_get, (key,)).fetchone()
        return None if row is None else build_entry(*row)

    def entries(self, state: str, limit: int | None = None) -> list[OutboxEntry]:
        """Entries in `state`, oldest first (at most `limit`)."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    _sql(
                        f"SELECT {_COLUMNS} FROM {self.table} WHERE state = %s"  # noqa: S608
                        " ORDER BY created_at LIMIT %s"
                    ),
                    (state, limit),
                )
                .fetchall()
            )
        return [build_entry(*row) for row in rows]

    def stats(self) -> OutboxStats:
        """Counts per state and the oldest pending charge's age in seconds."""
        t = self.table
        with self._lock:
            db = self._db()
            counts: dict[str, int] = dict(
                db.execute(_sql(f"SELECT state, count(*) FROM {t} GROUP BY state")).fetchall()  # noqa: S608
            )
            age = db.execute(
                _sql(f"SELECT {_NOW} - min(created_at) FROM {t} WHERE state = 'pending'")  # noqa: S608
            ).fetchone()
        oldest = None if age is None or age[0] is None else max(0.0, float(age[0]))
        return OutboxStats(
            pending=int(counts.get("pending", 0)),
            sent=int(counts.get("sent", 0)),
            dead=int(counts.get("dead", 0)),
            oldest_pending_age=oldest,
        )

    # -- lifecycle --------------------------------------------------------------

    def after_fork(self) -> None:
        """In a forked child: leave the parent's connections alone; reconnect on use."""
        # Closing them here would send the server a Terminate on the parent's sockets.
        _ABANDONED.extend(c for c in (self._conn, self._owner_conn) if c is not None)
        self._conn = self._owner_conn = None
        self._owner = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close both connections (this store's claims lapse with the second)."""
        with self._lock:
            for conn in (self._conn, self._owner_conn):
                if conn is not None:
                    conn.close()
            self._conn = self._owner_conn = None
            self._owner = 0
