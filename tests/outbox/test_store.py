"""The store contract, proved on both stores: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from knai.outbox import OutboxEntry, SQLiteStore
from knai.outbox._store import Outcome
from tests.outbox.conftest import Backend

TOKEN = "sess_tok_store_test_7c1d"


def _dead(store: object, key: str, status: int) -> None:
    error = json.dumps({"type": "X", "message": "no", "status_code": status, "request_id": None})
    store.settle([Outcome(key, key, "dead", error_json=error, purge_token=status in (403, 410))])  # type: ignore[attr-defined]


def test_add_stores_a_pending_entry_that_reads_back_the_same(backend: Backend) -> None:
    store = backend.make()
    entry = store.add("k1", TOKEN, 100, "gpt-4")
    assert isinstance(entry, OutboxEntry)
    assert (entry.state, entry.attempts, entry.amount_tokens, entry.model) == (
        "pending",
        0,
        100,
        "gpt-4",
    )
    assert backend.make().get("k1") == entry
    assert "sess_tok" not in repr(entry)


def test_same_key_same_charge_returns_the_existing_entry_and_another_charge_is_refused(
    backend: Backend,
) -> None:
    store = backend.make()
    first = store.add("k1", TOKEN, 100, "gpt-4")
    assert store.add("k1", TOKEN, 100, "gpt-4") == first
    with pytest.raises(ValueError, match="different charge"):
        store.add("k1", TOKEN, 101, "gpt-4")
    with pytest.raises(ValueError, match="different charge"):
        store.add("k1", TOKEN, 100, "gpt-3")
    assert store.stats().pending == 1


def test_a_claimed_row_is_not_claimed_again_by_another_live_sender(backend: Backend) -> None:
    one, two = backend.make(), backend.make()
    for i in range(3):
        one.add(f"k{i}", TOKEN, 10, "m")
    claimed = one.claim(2)
    assert [c.key for c in claimed] == ["k0", "k1"]
    assert claimed[0].session_token == TOKEN
    assert claimed[0].attempts == 1
    assert [c.key for c in two.claim(10)] == ["k2"]
    assert two.claim(10) == []
    assert one.claim(10) == []
    assert one.stats().pending == 3  # in flight still counts as pending


def test_rows_claimed_by_a_killed_process_are_claimable_at_once(backend: Backend) -> None:
    store = backend.make()
    store.add("k0", TOKEN, 10, "m")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, sys; from tests.outbox.conftest import open_spec;"
            " s = open_spec(json.loads(sys.argv[1])); print(len(s.claim(5)), flush=True);"
            " sys.stdin.read()",
            json.dumps(backend.spec()),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    with child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "1"
            assert store.claim(5) == []  # its owner lives
        finally:
            child.kill()
            child.wait()
    deadline = time.monotonic() + 10
    claims = store.claim(5)
    while not claims and time.monotonic() < deadline:  # the server notices the drop
        time.sleep(0.05)
        claims = store.claim(5)
    assert [(c.key, c.attempts) for c in claims] == [("k0", 2)]


def test_sent_stores_the_result_and_purges_the_token(backend: Backend) -> None:
    store = backend.make()
    store.add("k1", TOKEN, 100, "gpt-4")
    (claim,) = store.claim(1)
    result = '{"charge_id": "ch_9", "status": "succeeded", "amount_tokens": 100}'
    store.settle([Outcome("k1", claim.send_key, "sent", result_json=result)])
    entry = store.get("k1")
    assert entry is not None
    assert entry.state == "sent"
    assert entry.result is not None
    assert entry.result.charge_id == "ch_9"
    assert entry.result["amount_tokens"] == 100
    assert backend.column("k1", "session_token") is None
    assert store.claim(5) == []
    assert store.stats().sent == 1
    assert store.stats().pending == 0


def test_unknown_outcome_releases_the_row_until_its_pause_ends(backend: Backend) -> None:
    store = backend.make()
    store.add("k1", TOKEN, 100, "gpt-4")
    store.claim(1)
    store.settle([Outcome("k1", "k1", "pending", retry_at=time.time() + 3600)])
    assert store.claim(1) == []
    assert backend.column("k1", "session_token") == TOKEN
    store.add("k2", TOKEN, 5, "m")
    store.claim(1)
    store.settle([Outcome("k2", "k2", "pending", retry_at=0.0)])
    assert [c.key for c in backend.make().claim(5)] == ["k2"]


def test_dead_keeps_the_token_for_a_refusal_a_retry_can_fix_and_purges_it_when_the_session_ended(
    backend: Backend,
) -> None:
    store = backend.make()
    store.add("broke", TOKEN, 100, "m")
    store.add("gone", TOKEN, 100, "m")
    store.claim(2)
    _dead(store, "broke", 402)
    _dead(store, "gone", 410)
    dead = {e.idempotency_key: e for e in store.entries("dead")}
    assert dead["broke"].error is not None
    assert dead["broke"].error.status_code == 402
    assert backend.column("broke", "session_token") == TOKEN
    assert backend.column("gone", "session_token") is None
    assert store.claim(5) == []  # never retried on its own


def test_retry_dead_resends_under_a_derived_key_and_needs_a_token(backend: Backend) -> None:
    store = backend.make()
    store.add("broke", TOKEN, 100, "m")
    store.add("gone", TOKEN, 100, "m")
    store.claim(2)
    _dead(store, "broke", 402)
    _dead(store, "gone", 403)
    entry = store.retry_dead("broke")
    assert (entry.state, entry.retries, entry.send_key, entry.error) == (
        "pending",
        1,
        "broke:retry1",
        None,
    )
    (claim,) = store.claim(5)
    assert (claim.key, claim.send_key, claim.session_token) == ("broke", "broke:retry1", TOKEN)
    with pytest.raises(ValueError, match="no session token"):
        store.retry_dead("gone")
    assert store.retry_dead("gone", "sess_tok_new").send_key == "gone:retry1"
    with pytest.raises(ValueError, match="not dead"):
        store.retry_dead("broke")
    with pytest.raises(KeyError):
        store.retry_dead("nope")


def test_an_outcome_for_an_old_send_key_does_not_settle_a_retried_row(backend: Backend) -> None:
    store = backend.make()
    store.add("k", TOKEN, 1, "m")
    store.claim(1)
    _dead(store, "k", 402)
    store.retry_dead("k")
    store.settle([Outcome("k", "k", "sent", result_json="{}")])
    entry = store.get("k")
    assert entry is not None
    assert entry.state == "pending"


def test_stats_count_each_state_and_age_the_oldest_pending(backend: Backend) -> None:
    store = backend.make()
    assert store.stats().to_dict() == {
        "pending": 0,
        "sent": 0,
        "dead": 0,
        "oldest_pending_age": None,
    }
    for key in ("a", "b", "c"):
        store.add(key, TOKEN, 1, "m")
    store.claim(2)
    store.settle([Outcome("a", "a", "sent", result_json="{}")])
    _dead(store, "b", 409)
    stats = store.stats()
    assert (stats.pending, stats.sent, stats.dead) == (1, 1, 1)
    assert stats.oldest_pending_age is not None
    assert stats.oldest_pending_age >= 0
    assert [e.idempotency_key for e in store.entries("pending")] == ["c"]


def test_an_existing_sqlite_file_readable_by_others_is_warned_about_not_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shared.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    SQLiteStore(path).close()
    assert "mode 644" in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_missing_postgresql_binaries_fail_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.outbox import _postgres_server

    monkeypatch.setattr(_postgres_server, "bin_dir", lambda: None)
    with pytest.raises(RuntimeError, match=r"install-postgres"), _postgres_server.postgres_server():
        pass


def test_exchange_settles_and_claims_in_one_call(backend: Backend) -> None:
    store = backend.make()
    store.add("a", TOKEN, 1, "m")
    store.claim(1)
    store.add("b", TOKEN, 2, "m")
    claims = store.exchange([Outcome("a", "a", "sent", result_json="{}")], 5)
    assert [c.key for c in claims] == ["b"]
    entry = store.get("a")
    assert entry is not None
    assert entry.state == "sent"
    assert store.exchange([], 5) == []
