"""PostgreSQL only: `charge(..., connection=conn)` joins the caller's transaction
(the transactional outbox), with a psycopg Connection or AsyncConnection."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest

from knai.outbox import PostgresStore
from knai.testing import SandboxAdmin
from tests.outbox._twin import OutboxTwin
from tests.outbox.conftest import SLUG, USER

pytestmark = pytest.mark.anyio

Make = Callable[..., OutboxTwin]


def _usage_table(url: str) -> str:
    name = f"usage_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (request_id text PRIMARY KEY)")
    return name


async def _charge_in_transaction(
    outbox: OutboxTwin, url: str, usage: str, token: str, key: str, commit: bool
) -> None:
    if outbox.is_async:
        async with await psycopg.AsyncConnection.connect(url) as aconn:
            await aconn.execute(f"INSERT INTO {usage} VALUES (%s)", (key,))  # noqa: S608
            await outbox.charge(token, 9, "gpt-4", idempotency_key=key, connection=aconn)
            await (aconn.commit() if commit else aconn.rollback())
    else:
        with psycopg.connect(url) as conn:
            conn.execute(f"INSERT INTO {usage} VALUES (%s)", (key,))  # noqa: S608
            await outbox.charge(token, 9, "gpt-4", idempotency_key=key, connection=conn)
            if commit:
                conn.commit()
            else:
                conn.rollback()


async def test_a_charge_in_the_callers_transaction_commits_and_is_sent_with_it(
    make_outbox: Make, postgres_url: str, admin: SandboxAdmin, token: str
) -> None:
    store = PostgresStore(postgres_url, table=f"o_{uuid.uuid4().hex[:10]}")
    outbox = make_outbox(store)
    usage = _usage_table(postgres_url)
    await _charge_in_transaction(outbox, postgres_url, usage, token, "usage-1", commit=True)
    await outbox.start()
    assert await outbox.drain(10)
    assert [c.idempotency_key for c in admin.charges(SLUG, USER)] == ["usage-1"]


async def test_a_rolled_back_transaction_takes_its_charge_with_it(
    make_outbox: Make, postgres_url: str, admin: SandboxAdmin, token: str
) -> None:
    store = PostgresStore(postgres_url, table=f"o_{uuid.uuid4().hex[:10]}")
    outbox = make_outbox(store)
    usage = _usage_table(postgres_url)
    await _charge_in_transaction(outbox, postgres_url, usage, token, "usage-2", commit=False)
    await outbox.start()
    assert await outbox.drain(10)
    assert await outbox.get("usage-2") is None
    assert admin.charges(SLUG, USER) == []


async def test_connection_is_refused_by_the_sqlite_store(
    make_outbox: Make, token: str, tmp_path: object
) -> None:
    outbox = make_outbox(f"{tmp_path}/o.db")
    with pytest.raises(ValueError, match="connection"):
        await outbox.charge(token, 1, "m", idempotency_key="k", connection=object())


def test_a_postgres_url_opens_a_postgres_store_and_a_bad_table_name_is_refused(
    postgres_url: str,
) -> None:
    from knai.outbox import open_store

    store = open_store(postgres_url)
    assert isinstance(store, PostgresStore)
    assert "knai@" not in repr(store)
    store.close()
    with pytest.raises(ValueError, match="table"):
        PostgresStore(postgres_url, table="x; DROP TABLE y")
