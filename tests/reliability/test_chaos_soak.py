"""The chaos soak (tests/support/soak.py), test-sized: a few hundred charges in a few seconds.

The script's own checker is tested too: a soak that cannot report a
discrepancy would prove nothing.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from knai import APIConnectionError, KNAIProvider
from knai.testing import Ledger, RunningSandbox, serve
from tests.support.soak import (
    API_KEY,
    MODEL,
    SLUG,
    START_BALANCE,
    Outcome,
    SoakConfig,
    SoakReport,
    check,
    open_wallet,
    outcome_of,
    plan,
    run_soak,
)


def test_a_soak_of_400_charges_through_a_fifth_of_faulty_requests_leaves_no_discrepancy() -> None:
    config = SoakConfig(charges=400, threads=4, tasks=32, seed=7, timeout=0.5, time_limit=60)
    report = run_soak(config)
    figures = "\n".join(report.lines())
    assert report.discrepancies == [], figures
    assert len(report.outcomes) == 400
    # The weather really was bad, and every kind of outcome was seen and accounted for.
    assert report.faults_fired >= 0.1 * report.requests, figures
    assert {"status-503", "delay", "drop-before", "drop-after"} <= set(report.faults_queued)
    assert report.count("success") > 300, figures
    assert report.count("failed") > 0, figures  # at least the charges the wallet cannot cover
    assert report.count("crashed") == 0
    assert sum(report.settled.values()) == report.count("unknown")
    assert report.final_balance == START_BALANCE - report.ledger_sum
    assert {o.by for o in report.outcomes} == {"thread", "task"}


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "chaos_soak.py"


def test_the_command_runs_a_soak_from_any_directory_and_exits_zero_without_discrepancy(
    tmp_path: Path,
) -> None:
    """`python scripts/chaos_soak.py` is a thin command over tests/support/soak.py."""
    args = ["--charges", "30", "--threads", "2", "--tasks", "4", "--timeout", "0.3"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("chaos soak: 30 charges, 2 threads + 4 tasks")
    assert "  discrepancies        0\n" in done.stdout


def test_the_command_refuses_a_fault_rate_of_one() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--fault-rate", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "0 <= fault-rate < 1" in done.stderr


@pytest.fixture
def wallet() -> Iterator[tuple[RunningSandbox, dict[bool, str]]]:
    with serve(Ledger()) as running:
        yield running, open_wallet(running.admin)


def test_the_checker_catches_misreported_charges_and_settles_unknown_ones(
    wallet: tuple[RunningSandbox, dict[bool, str]],
) -> None:
    running, tokens = wallet
    right, debited, missing, crashed, unknown = plan(
        SoakConfig(charges=5, oversized_share=0, revoked_share=0)
    )
    with KNAIProvider(API_KEY, SLUG, running.url) as provider:
        charged = [
            provider.charge(tokens[False], c.amount, MODEL, idempotency_key=c.key)
            for c in (right, debited)
        ]
        report = SoakReport(SoakConfig(charges=5))
        report.outcomes = [
            outcome_of(right, "thread", charged[0], None),
            Outcome(debited, "failed", "thread", error="402", reported_key=debited.key),
            Outcome(missing, "success", "task", charge_id="ch_never", reported_key=missing.key),
            outcome_of(crashed, "task", None, ValueError("boom")),
            outcome_of(
                unknown,
                "task",
                None,
                APIConnectionError(idempotency_key=unknown.key, may_have_been_applied=True),
            ),
        ]
        check(report, running.admin, provider, [right, debited, missing, crashed, unknown], tokens)
    assert sorted(report.discrepancies) == sorted(
        [
            f"{debited.key}: reported a definite failure but was debited",
            f"{missing.key}: reported charged but not in the ledger",
            f"{crashed.key}: raised a non-KNAI exception: ValueError: boom",
        ]
    )
    assert report.settled == {"applied by the replay": 1}
    assert report.ledger_charges == 3
    assert report.final_balance == START_BALANCE - report.ledger_sum
