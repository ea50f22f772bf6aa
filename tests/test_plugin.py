"""The pytest plugin as a user meets it: its four fixtures, wired together, listed by pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from knai import AsyncKNAIProvider, KNAIProvider
from knai.testing import (
    DEMO_BALANCE,
    DEMO_PROVIDER_SLUG,
    DEMO_USERNAME,
    RunningSandbox,
    Sandbox,
)

SLUG, USER = DEMO_PROVIDER_SLUG, DEMO_USERNAME
FIXTURES = ("knai_sandbox", "knai_sandbox_server", "knai_provider", "knai_async_provider")


def test_knai_provider_charges_the_served_demo_wallet(
    knai_provider: KNAIProvider, knai_sandbox_server: RunningSandbox
) -> None:
    """The plugin docstring's example works as written."""
    admin = knai_sandbox_server.admin
    token = admin.open_session(SLUG, USER).session_token
    result = knai_provider.charge(token, 100, "gpt-4")
    assert admin.balance(SLUG, USER) == result.remaining_balance == DEMO_BALANCE - 100
    assert isinstance(knai_provider, KNAIProvider)
    assert knai_provider.base_url == knai_sandbox_server.url
    assert knai_provider.provider_slug == SLUG


@pytest.mark.anyio
async def test_knai_async_provider_charges_the_served_demo_wallet(
    knai_async_provider: AsyncKNAIProvider, knai_sandbox_server: RunningSandbox
) -> None:
    admin = knai_sandbox_server.admin
    admin.open_session(SLUG, USER, activate_after=0.1)
    session = await knai_async_provider.wait_for_session(USER, poll_interval=0.05, timeout=5)
    result = await knai_async_provider.charge(session["session_token"], 100, "gpt-4")
    assert admin.balance(SLUG, USER) == result.remaining_balance == DEMO_BALANCE - 100
    assert isinstance(knai_async_provider, AsyncKNAIProvider)
    assert knai_async_provider.base_url == knai_sandbox_server.url


def test_knai_sandbox_is_a_fresh_demo_wallet_in_process(knai_sandbox: Sandbox) -> None:
    admin = knai_sandbox.admin
    assert admin.balance(SLUG, USER) == DEMO_BALANCE
    assert admin.charges(SLUG, USER) == []
    assert admin.faults() == []
    assert admin.create_user(SLUG, "alice", balance=5) == 5


def test_knai_sandbox_server_serves_the_knai_sandbox_ledger_on_loopback(
    knai_sandbox: Sandbox, knai_sandbox_server: RunningSandbox
) -> None:
    assert knai_sandbox_server.url.startswith("http://127.0.0.1:")
    assert knai_sandbox_server.ledger is knai_sandbox.ledger
    knai_sandbox.admin.create_user(SLUG, "alice", balance=5)
    assert knai_sandbox_server.admin.balance(SLUG, "alice") == 5


def test_knai_provider_rides_out_an_outage_in_milliseconds(
    knai_provider: KNAIProvider, knai_sandbox_server: RunningSandbox
) -> None:
    """Two 503s cost a few ms of backoff, not the default 0.5 s + 1 s."""
    admin = knai_sandbox_server.admin
    token = admin.open_session(SLUG, USER).session_token
    admin.inject_fault("charge", status=503, times=2)
    started = time.monotonic()
    result = knai_provider.charge(token, 100, "gpt-4")
    # The default policy's two pauses are at least (0.5 + 1.0) * 0.75 = 1.125 s; a loaded
    # machine's sandbox round trips stay far below the difference.
    assert time.monotonic() - started < 1.0
    assert result.meta.retries == 2
    assert [c.charge_id for c in admin.charges(SLUG, USER)] == [result.charge_id]


def test_pytest_fixtures_lists_the_plugin_fixtures(tmp_path: Path) -> None:
    """Installing the package registers the plugin: a bare project sees its fixtures."""
    (tmp_path / "test_empty.py").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "fixtures defined from knai.testing.pytest_plugin" in listed.stdout
    for name in FIXTURES:
        assert re.search(rf"^{name} -- .*pytest_plugin\.py:\d+$", listed.stdout, re.MULTILINE), name
