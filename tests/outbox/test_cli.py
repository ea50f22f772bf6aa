"""`knai outbox status|dead|retry|drain`: JSON on stdout, errors as JSON on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from knai.outbox import SQLiteStore
from knai.outbox._store import Outcome
from knai.testing import DEMO_API_KEY, RunningSandbox
from tests.outbox.conftest import SLUG, USER, Backend


def knai(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KNAI_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "knai", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def _out(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_and_dead_report_the_store_on_both_stores(backend: Backend) -> None:
    store = backend.make()
    store.add("ok", "sess_tok_cli_1", 5, "m")
    store.add("refused", "sess_tok_cli_1", 5, "m")
    store.claim(5)
    error = json.dumps({"type": "InsufficientBalanceError", "message": "no", "status_code": 402})
    store.settle([Outcome("refused", "refused", "dead", error_json=error, purge_token=False)])
    spec = backend.spec()
    where = ["--store", spec.get("path") or spec["url"]]
    if backend.kind == "postgres":
        where += ["--table", spec["table"]]
    status = _out(knai("outbox", "status", *where))
    assert status["ok"] is True
    assert {k: status["result"][k] for k in ("pending", "sent", "dead")} == {
        "pending": 1,
        "sent": 0,
        "dead": 1,
    }
    dead = _out(knai("outbox", "dead", *where))["result"]
    assert [(d["idempotency_key"], d["error"]["status_code"]) for d in dead] == [("refused", 402)]
    assert "sess_tok_cli_1" not in json.dumps(dead)
    retried = _out(knai("outbox", "retry", "refused", *where))["result"]
    assert (retried["state"], retried["send_key"]) == ("pending", "refused:retry1")


def test_retry_of_an_unknown_key_is_a_json_error_naming_it(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "o.db").close()
    done = knai("outbox", "retry", "nope", "--store", str(tmp_path / "o.db"))
    assert done.returncode == 2
    error = json.loads(done.stderr)["error"]
    assert error["type"] == "ValueError"
    assert "nope" in error["message"]


def test_missing_store_names_the_flag_and_the_variable() -> None:
    done = knai("outbox", "status")
    assert done.returncode == 2
    assert "KNAI_OUTBOX_STORE" in json.loads(done.stderr)["error"]["message"]


def test_drain_delivers_pending_charges_and_reports_what_is_left(
    knai_sandbox_server: RunningSandbox, token: str, tmp_path: Path
) -> None:
    db = tmp_path / "o.db"
    store = SQLiteStore(db)
    store.add("c1", token, 3, "m")
    store.add("c2", token, 4, "m")
    store.close()
    env = {
        "KNAI_API_KEY": DEMO_API_KEY,
        "KNAI_PROVIDER_SLUG": SLUG,
        "KNAI_BASE_URL": knai_sandbox_server.url,
        "KNAI_OUTBOX_STORE": str(db),
    }
    result = _out(knai("outbox", "drain", "--timeout", "20", env=env))["result"]
    assert (result["drained"], result["pending"], result["sent"]) == (True, 0, 2)
    charges = knai_sandbox_server.admin.charges(SLUG, USER)
    assert sorted(str(c.idempotency_key) for c in charges) == ["c1", "c2"]
    assert token not in json.dumps(result)


def test_drain_with_the_wallet_down_exits_1_with_the_charges_still_pending(
    knai_sandbox_server: RunningSandbox, token: str, tmp_path: Path
) -> None:
    knai_sandbox_server.admin.inject_fault("charge", status=503, times=10_000)
    db = tmp_path / "o.db"
    store = SQLiteStore(db)
    store.add("c1", token, 3, "m")
    store.close()
    env = {
        "KNAI_API_KEY": DEMO_API_KEY,
        "KNAI_PROVIDER_SLUG": SLUG,
        "KNAI_BASE_URL": knai_sandbox_server.url,
    }
    done = knai("outbox", "drain", "--store", str(db), "--timeout", "0.5", env=env)
    assert done.returncode == 1
    assert json.loads(done.stdout)["result"]["pending"] == 1


def test_knai_help_lists_the_outbox_command() -> None:
    done = knai("--help")
    assert "outbox" in done.stdout
    actions = knai("outbox", "--help")
    for word in ("status", "drain", "dead", "retry"):
        assert word in actions.stdout
