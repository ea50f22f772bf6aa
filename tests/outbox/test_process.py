"""The outbox across process events: fork, interpreter exit, and what `import knai` loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from knai.outbox import SQLiteStore
from knai.testing import RunningSandbox
from tests.outbox.conftest import SLUG, USER


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_import_knai_does_not_import_the_outbox_nor_the_outbox_psycopg() -> None:
    code = (
        "import sys, knai; assert 'knai.outbox' not in sys.modules, 'outbox';"
        " import knai.outbox; assert 'psycopg' not in sys.modules, 'psycopg';"
        " assert 'sqlite3' not in sys.modules, 'sqlite3'"
    )
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("flavour", ["fork-sync", "fork-async"])
def test_the_sender_comes_back_in_a_forked_child_and_keeps_running_in_the_parent(
    flavour: str, knai_sandbox_server: RunningSandbox, token: str, tmp_path: Path
) -> None:
    db = tmp_path / "o.db"
    done = _run("-m", "tests.outbox._proc", flavour, knai_sandbox_server.url, str(db), token)
    assert done.returncode == 0, done.stdout + done.stderr
    keys = sorted(str(c.idempotency_key) for c in knai_sandbox_server.admin.charges(SLUG, USER))
    expected = ["child", "parent-after", "parent-before"]
    assert keys == (expected if flavour == "fork-sync" else ["child", "parent-before"])


def test_interpreter_exit_drains_the_outbox_before_stopping(
    knai_sandbox_server: RunningSandbox, token: str, tmp_path: Path
) -> None:
    db = tmp_path / "o.db"
    done = _run("-m", "tests.outbox._proc", "exit", knai_sandbox_server.url, str(db), token)
    assert done.returncode == 0, done.stderr
    assert [c.idempotency_key for c in knai_sandbox_server.admin.charges(SLUG, USER)] == ["at-exit"]


def test_interpreter_exit_with_the_wallet_down_is_bounded_and_keeps_the_charge(
    knai_sandbox_server: RunningSandbox, token: str, tmp_path: Path
) -> None:
    knai_sandbox_server.admin.inject_fault("charge", status=503, times=10_000)
    db = tmp_path / "o.db"
    done = _run("-m", "tests.outbox._proc", "exit", knai_sandbox_server.url, str(db), token)
    assert done.returncode == 0, done.stderr
    entry = SQLiteStore(db).get("at-exit")
    assert entry is not None
    assert entry.state == "pending"
    assert entry.attempts >= 1
