"""Outbox and AsyncOutbox end to end against the sandbox wallet on a loopback socket.

Each test runs on both flavours; what it checks is what a provider observes:
the entry `charge()` returns, the states the outbox reports, and the wallet's
own ledger of charges.
"""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from knai.outbox import SQLiteStore
from knai.testing import SandboxAdmin
from tests.outbox._twin import OutboxTwin
from tests.outbox.conftest import SLUG, USER, Backend

pytestmark = pytest.mark.anyio

Make = Callable[..., OutboxTwin]


def ledger_keys(admin: SandboxAdmin) -> list[str | None]:
    return [c.idempotency_key for c in admin.charges(SLUG, USER)]


async def test_charge_returns_pending_then_the_sender_charges_the_wallet_exactly_once(
    make_outbox: Make, admin: SandboxAdmin, token: str, tmp_path: Path
) -> None:
    outbox = make_outbox(tmp_path / "o.db")
    entry = await outbox.charge(token, 1500, "gpt-4", idempotency_key="req-1")
    assert (entry.state, entry.idempotency_key, entry.send_key) == ("pending", "req-1", "req-1")
    assert ledger_keys(admin) == []  # not started: stored, not sent
    await outbox.start()
    assert await outbox.drain(10)
    sent = await outbox.get("req-1")
    assert sent is not None
    assert sent.state == "sent"
    assert sent.result is not None
    (charge,) = admin.charges(SLUG, USER)
    assert (charge.idempotency_key, charge.amount_tokens) == ("req-1", 1500)
    assert sent.result.charge_id == charge.charge_id
    assert (await outbox.stats()).to_dict()["sent"] == 1


async def test_charges_made_while_the_wallet_is_down_are_delivered_once_it_is_back(
    make_outbox: Make, admin: SandboxAdmin, token: str, tmp_path: Path
) -> None:
    admin.inject_fault("charge", status=503, times=1000)
    outbox = make_outbox(tmp_path / "o.db")
    await outbox.start()
    for i in range(5):
        await outbox.charge(token, 10, "gpt-4", idempotency_key=f"down-{i}")
    assert not await outbox.drain(0.5)
    pending = await outbox.pending()
    assert len(pending) == 5
    assert all(e.attempts >= 1 for e in pending)
    stats = await outbox.stats()
    assert stats.pending == 5
    assert stats.oldest_pending_age is not None
    admin.clear_faults()
    assert await outbox.drain(10)
    assert sorted(ledger_keys(admin)) == [f"down-{i}" for i in range(5)]  # type: ignore[type-var]


async def test_an_unknown_outcome_is_replayed_with_the_same_key_into_one_charge(
    make_outbox: Make, admin: SandboxAdmin, token: str, tmp_path: Path
) -> None:
    # The SDK's two attempts both lose the answer after the debit: outcome unknown.
    admin.inject_fault("charge", drop="after", times=2)
    outbox = make_outbox(tmp_path / "o.db")
    await outbox.start()
    await outbox.charge(token, 7, "gpt-4", idempotency_key="lost-answer")
    assert await outbox.drain(10)
    entry = await outbox.get("lost-answer")
    assert entry is not None
    assert entry.state == "sent"
    assert entry.attempts == 2
    assert ledger_keys(admin) == ["lost-answer"]


async def test_a_refusal_goes_to_the_dead_list_and_retry_dead_charges_it_under_a_derived_key(
    make_outbox: Make, admin: SandboxAdmin, token: str, tmp_path: Path
) -> None:
    balance = admin.balance(SLUG, USER)
    outbox = make_outbox(tmp_path / "o.db")
    await outbox.start()
    await outbox.charge(token, balance + 1, "gpt-4", idempotency_key="too-big")
    assert await outbox.drain(10)
    (dead,) = await outbox.dead()
    assert dead.state == "dead"
    assert dead.error is not None
    assert (dead.error.type, dead.error.status_code) == ("InsufficientBalanceError", 402)
    assert ledger_keys(admin) == []
    admin.top_up(SLUG, USER, 10)
    retried = await outbox.retry_dead("too-big")
    assert (retried.state, retried.send_key) == ("pending", "too-big:retry1")
    assert await outbox.drain(10)
    entry = await outbox.get("too-big")
    assert entry is not None
    assert entry.state == "sent"
    assert ledger_keys(admin) == ["too-big:retry1"]


async def test_a_charge_on_an_ended_session_dies_with_its_token_purged_and_needs_a_new_one(
    make_outbox: Make, admin: SandboxAdmin, tmp_path: Path
) -> None:
    session = admin.open_session(SLUG, USER)
    admin.revoke_session(session.session_id)
    outbox = make_outbox(tmp_path / "o.db")
    await outbox.start()
    await outbox.charge(session.session_token, 5, "gpt-4", idempotency_key="revoked")
    assert await outbox.drain(10)
    (dead,) = await outbox.dead()
    assert dead.error is not None
    assert dead.error.status_code in (403, 410)
    with pytest.raises(ValueError, match="no session token"):
        await outbox.retry_dead("revoked")
    fresh = admin.open_session(SLUG, USER).session_token
    await outbox.retry_dead("revoked", session_token=fresh)
    assert await outbox.drain(10)
    assert ledger_keys(admin) == ["revoked:retry1"]


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("", 5, "m"), ValueError, "session_token"),
        ((None, 5, "m"), TypeError, "session_token"),
        (("tok", 0, "m"), ValueError, "amount_tokens"),
        (("tok", True, "m"), TypeError, "amount_tokens"),
        (("tok", 5, ""), ValueError, "model"),
        (("tok", 5, "m", "x" * 256), ValueError, "idempotency_key"),
        (("tok", 5, "m", "k:retry3"), ValueError, "idempotency_key"),
    ],
)
async def test_bad_arguments_are_refused_naming_the_argument_before_anything_is_stored(
    make_outbox: Make, tmp_path: Path, args: tuple[Any, ...], error: type[Exception], match: str
) -> None:
    outbox = make_outbox(tmp_path / "o.db")
    key = args[3] if len(args) > 3 else "k"
    with pytest.raises(error, match=match):
        await outbox.charge(*args[:3], idempotency_key=key)
    assert (await outbox.stats()).pending == 0


async def test_reusing_a_key_for_another_charge_raises_and_for_the_same_returns_the_entry(
    make_outbox: Make, token: str, tmp_path: Path
) -> None:
    outbox = make_outbox(tmp_path / "o.db")
    first = await outbox.charge(token, 5, "gpt-4", idempotency_key="same")
    assert await outbox.charge(token, 5, "gpt-4", idempotency_key="same") == first
    with pytest.raises(ValueError, match="different charge"):
        await outbox.charge(token, 6, "gpt-4", idempotency_key="same")


async def test_a_new_outbox_resumes_what_a_stopped_one_left_pending(
    make_outbox: Make, admin: SandboxAdmin, token: str, tmp_path: Path
) -> None:
    first = make_outbox(tmp_path / "o.db")
    for i in range(3):
        await first.charge(token, 1, "m", idempotency_key=f"left-{i}")
    await first.close()
    second = make_outbox(tmp_path / "o.db")
    await second.start()
    assert await second.drain(10)
    assert sorted(ledger_keys(admin)) == ["left-0", "left-1", "left-2"]  # type: ignore[type-var]


async def test_stop_drains_for_a_bounded_time_and_leaves_undelivered_charges_pending(
    make_outbox: Make, admin: SandboxAdmin, token: str, tmp_path: Path
) -> None:
    admin.inject_fault("charge", status=503, times=1000)
    outbox = make_outbox(tmp_path / "o.db")
    await outbox.start()
    await outbox.charge(token, 1, "m", idempotency_key="stuck")
    assert await outbox.stop(0.3) is False
    entry = await outbox.get("stuck")
    assert entry is not None
    assert entry.state == "pending"


async def test_the_sqlite_file_and_its_wal_and_shm_files_are_readable_by_the_owner_only(
    make_outbox: Make, token: str, tmp_path: Path
) -> None:
    path = tmp_path / "o.db"
    outbox = make_outbox(path)
    await outbox.charge(token, 1, "m", idempotency_key="k")
    for name in ("o.db", "o.db-wal", "o.db-shm"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


async def test_the_session_token_is_never_logged_nor_in_any_repr(
    make_outbox: Make,
    admin: SandboxAdmin,
    token: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    admin.inject_fault("charge", status=503, times=3)
    admin.inject_fault("charge", drop="after")
    admin.inject_fault("charge", status=402)
    outbox = make_outbox(tmp_path / "o.db")
    await outbox.start()
    await outbox.charge(token, 1, "m", idempotency_key="a")
    await outbox.charge(token, 1, "m", idempotency_key="b")
    assert await outbox.drain(10)
    assert caplog.records  # the outbox did log its deliveries
    assert token not in caplog.text
    entries = [*(await outbox.dead()), await outbox.get("a"), await outbox.get("b")]
    assert token not in repr(entries) + repr(outbox.outbox) + repr(outbox.outbox.store)


async def test_both_stores_deliver_end_to_end(
    make_outbox: Make, backend: Backend, admin: SandboxAdmin, token: str
) -> None:
    outbox = make_outbox(backend.make())
    await outbox.start()
    for i in range(4):
        await outbox.charge(token, 2, "m", idempotency_key=f"{backend.kind}-{i}")
    assert await outbox.drain(10)
    assert len(ledger_keys(admin)) == 4


def test_synchronous_full_is_the_default_and_normal_is_a_choice(tmp_path: Path) -> None:
    """WAL with synchronous=FULL: a returned charge survives power loss (see the README)."""
    import sqlite3

    store = SQLiteStore(tmp_path / "o.db")
    db = store._db()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    normal = SQLiteStore(tmp_path / "n.db", synchronous="NORMAL")
    assert normal._db().execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]
    store.close()
    normal.close()
    assert sqlite3.sqlite_version


class _ThreadRecordingStore(SQLiteStore):
    """A SQLite store that notes the thread each of its calls runs on."""

    threads: set[int]

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name not in ("add", "claim", "settle", "get", "entries", "stats", "retry_dead"):
            return value
        import threading

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.threads.add(threading.get_ident())
            return value(*args, **kwargs)

        return recorded


async def test_the_async_outbox_never_calls_the_store_on_the_event_loop_thread(
    knai_sandbox_server: Any, token: str, tmp_path: Path
) -> None:
    import threading

    from knai import AsyncKNAIProvider
    from knai.outbox import AsyncOutbox
    from knai.testing import DEMO_API_KEY

    store = _ThreadRecordingStore(tmp_path / "o.db")
    store.threads = set()
    async with (
        AsyncKNAIProvider(DEMO_API_KEY, SLUG, knai_sandbox_server.url) as provider,
        AsyncOutbox(provider, store, poll_interval=0.05) as outbox,
    ):
        await outbox.charge(token, 1, "m", idempotency_key="k")
        assert await outbox.drain(10)
        await outbox.stats()
        await outbox.pending()
    assert store.threads
    assert threading.get_ident() not in store.threads


async def test_an_async_outbox_opens_its_store_only_when_first_used(
    knai_sandbox_server: Any, tmp_path: Path
) -> None:
    from knai import AsyncKNAIProvider
    from knai.outbox import AsyncOutbox
    from knai.testing import DEMO_API_KEY

    async with AsyncKNAIProvider(DEMO_API_KEY, SLUG, knai_sandbox_server.url) as provider:
        outbox = AsyncOutbox(provider, tmp_path / "o.db")
        assert not (tmp_path / "o.db").exists()
        assert (await outbox.stats()).pending == 0
        assert (tmp_path / "o.db").exists()
        await outbox.aclose()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"drain_timeout": -1}, "drain_timeout"),
        ({"retry_backoff": (0, 1)}, "backoff"),
    ],
)
def test_bad_outbox_options_are_refused_naming_them(
    tmp_path: Path, options: dict[str, Any], match: str
) -> None:
    from knai import KNAIProvider
    from knai.outbox import Outbox
    from knai.testing import DEMO_API_KEY

    with KNAIProvider(DEMO_API_KEY, SLUG, "http://127.0.0.1:9") as provider:
        with pytest.raises(ValueError, match=match):
            Outbox(provider, tmp_path / "o.db", **options)
        with pytest.raises(TypeError, match="provider"):
            Outbox("not a provider", tmp_path / "o.db")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="store"):
            Outbox(provider, 42)  # type: ignore[arg-type]


async def test_a_delivery_still_in_flight_at_stop_is_settled_or_handed_on_never_stuck(
    make_outbox: Make, admin: SandboxAdmin, token: str, tmp_path: Path
) -> None:
    """Sync: the delivery finishes on its own. Async: it is cancelled and its lease given up."""
    admin.inject_fault("charge", delay=1.5)
    first = make_outbox(tmp_path / "o.db")
    await first.start()
    await first.charge(token, 3, "m", idempotency_key="slow")
    while (await first.get("slow")).attempts == 0:  # type: ignore[union-attr]
        await asyncio.sleep(0.01)
    assert await first.stop(0.2) is False
    second = make_outbox(tmp_path / "o.db")
    assert await second.drain(10)
    await asyncio.sleep(1.5)  # a cancelled request the server still applies lands first
    assert ledger_keys(admin) == ["slow"]
