"""Fixtures of the outbox tests: both stores (a SQLite file, a table on a real PostgreSQL
server the suite starts itself), both outboxes behind one awaitable surface, a sandbox wallet."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from knai import AsyncKNAIProvider, KNAIProvider
from knai.outbox import AsyncOutbox, Outbox, PostgresStore, SQLiteStore, Store
from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, DEMO_USERNAME, RunningSandbox
from knai.testing.pytest_plugin import quick_retries
from tests.outbox._postgres_server import postgres_server
from tests.outbox._twin import OutboxTwin

SLUG, USER = DEMO_PROVIDER_SLUG, DEMO_USERNAME


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the whole session; fails (never skips) without binaries."""
    try:
        with postgres_server() as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Backend:
    """One fresh SQLite file or PostgreSQL table; opens store handles on it and reads it raw."""

    def __init__(self, kind: str, path: Path, url: str | None) -> None:
        self.kind = kind
        self.path = path
        self.url = url
        self.table = f"outbox_{uuid.uuid4().hex[:12]}"
        self.opened: list[Store] = []

    def make(self) -> Store:
        """A new store handle (a separate sender, as far as leases go)."""
        store: Store
        if self.kind == "sqlite":
            store = SQLiteStore(self.path)
        else:
            assert self.url is not None
            store = PostgresStore(self.url, table=self.table)
        self.opened.append(store)
        return store

    def spec(self) -> dict[str, str]:
        """How a child process opens the same store (see `open_spec`)."""
        if self.kind == "sqlite":
            return {"kind": "sqlite", "path": str(self.path)}
        assert self.url is not None
        return {"kind": "postgres", "url": self.url, "table": self.table}

    def column(self, key: str, column: str) -> Any:
        """One column of a row, read straight from the database."""
        table = "knai_outbox" if self.kind == "sqlite" else self.table
        sql = f"SELECT {column} FROM {table}"  # noqa: S608
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as db:
                row = db.execute(sql + " WHERE key = ?", (key,)).fetchone()
        else:
            import psycopg

            assert self.url is not None
            with psycopg.connect(self.url) as conn:
                row = conn.execute(sql + " WHERE key = %s", (key,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        for store in self.opened:
            store.close()


def open_spec(spec: dict[str, str]) -> Store:
    """Open the store a `Backend.spec()` describes (in a child process)."""
    if spec["kind"] == "sqlite":
        return SQLiteStore(spec["path"])
    return PostgresStore(spec["url"], table=spec["table"])


@pytest.fixture
def backend(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh store of each kind (each test runs on SQLite and on PostgreSQL)."""
    url = request.getfixturevalue("postgres_url") if store_kind == "postgres" else None
    made = Backend(store_kind, tmp_path / "outbox.db", url)
    yield made
    made.close()


@pytest.fixture
def admin(knai_sandbox_server: RunningSandbox) -> Any:
    return knai_sandbox_server.admin


@pytest.fixture
def token(admin: Any) -> str:
    return str(admin.open_session(SLUG, USER).session_token)


@pytest.fixture(params=["sync", "async"])
async def make_outbox(
    request: pytest.FixtureRequest, knai_sandbox_server: RunningSandbox
) -> AsyncIterator[Callable[..., OutboxTwin]]:
    """Makers of an `Outbox` or an `AsyncOutbox` on the sandbox (each test runs twice)."""
    made: list[OutboxTwin] = []
    providers: list[KNAIProvider | AsyncKNAIProvider] = []

    def make(store: Any, **options: Any) -> OutboxTwin:
        options.setdefault("poll_interval", 0.05)
        options.setdefault("retry_backoff", (0.01, 0.05))
        provider: KNAIProvider | AsyncKNAIProvider
        if request.param == "sync":
            provider = KNAIProvider(DEMO_API_KEY, SLUG, knai_sandbox_server.url, max_retries=1)
            twin = OutboxTwin(Outbox(provider, store, **options))
        else:
            provider = AsyncKNAIProvider(DEMO_API_KEY, SLUG, knai_sandbox_server.url, max_retries=1)
            twin = OutboxTwin(AsyncOutbox(provider, store, **options))
        quick_retries(provider)
        providers.append(provider)
        made.append(twin)
        return twin

    yield make
    for twin in made:
        await twin.close()
    for provider in providers:
        if isinstance(provider, AsyncKNAIProvider):
            await provider.aclose()
        else:
            provider.close()
