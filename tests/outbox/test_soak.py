"""The crash soak of scripts/outbox_soak.py, test-sized, on SQLite and on PostgreSQL.

Worker processes charging through an outbox are SIGKILLed at random moments and
restarted while a fifth of the requests fail; after the drain every returned
charge is in the ledger exactly once or dead with a definite refusal. The
soak's checker is tested too: a soak that cannot report a discrepancy proves
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scripts.outbox_soak import SoakConfig, SoakReport, check, run_soak

from knai.outbox import SQLiteStore
from knai.outbox._store import Outcome


def _assert_clean(report: SoakReport) -> None:
    assert report.discrepancies == [], "\n".join(report.lines())
    assert report.kills >= 3
    assert report.returned == report.config.workers * report.config.charges
    assert report.sent + sum(report.dead.values()) == report.returned
    assert report.faults_fired > 0


def test_sqlite_outbox_survives_sigkills_with_nothing_lost_or_doubled() -> None:
    _assert_clean(run_soak(SoakConfig(store="sqlite", workers=2, charges=120, kills=4, seed=3)))


def test_postgres_outbox_with_four_senders_survives_sigkills(postgres_url: str) -> None:
    config = SoakConfig(
        store="postgres", workers=4, charges=60, kills=4, seed=4, postgres_url=postgres_url
    )
    _assert_clean(run_soak(config))


@dataclass
class _Charge:
    idempotency_key: str
    amount_tokens: int


def _store_with_one_sent(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "o.db")
    store.add("k", "sess_tok_x", 5, "m")
    store.claim(1)
    store.settle([Outcome("k", "k", "sent", result_json="{}")])
    return store


def test_the_checker_reports_a_doubled_a_lost_and_a_stranger_charge(tmp_path: Path) -> None:
    report = SoakReport(SoakConfig())
    ledger = [_Charge("k", 5), _Charge("k", 5), _Charge("who", 1)]
    check(report, _store_with_one_sent(tmp_path), ledger, ["k", "lost"])
    text = "\n".join(report.discrepancies)
    assert "k: sent but charged 2 times" in text
    assert "lost: charge() returned but the store lost it" in text
    assert "who: in the ledger but not in the store" in text


def test_the_checker_reports_a_wrong_amount_and_passes_a_clean_ledger(tmp_path: Path) -> None:
    report = SoakReport(SoakConfig())
    check(report, _store_with_one_sent(tmp_path), [_Charge("k", 6)], ["k"])
    assert report.discrepancies == ["k: charged 6, not 5"]
    clean = SoakReport(SoakConfig())
    check(clean, _store_with_one_sent(tmp_path), [_Charge("k", 5)], ["k"])
    assert clean.discrepancies == []
