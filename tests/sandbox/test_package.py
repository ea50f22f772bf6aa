"""The public surface of knai.testing: exactly the names meant, loaded only when used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import knai.testing

SRC = Path(knai.testing.__file__).resolve().parents[2]

PUBLIC = {
    "DEMO_API_KEY",
    "DEMO_BALANCE",
    "DEMO_PROVIDER_SLUG",
    "DEMO_USERNAME",
    "AsyncSandboxTransport",
    "Charge",
    "ConflictError",
    "DropWhen",
    "Endpoint",
    "FakeLLM",
    "FakeLLMRequest",
    "Fault",
    "Ledger",
    "LedgerError",
    "NotFoundError",
    "PendingFault",
    "Reply",
    "RunningFakeLLM",
    "RunningSandbox",
    "Sandbox",
    "SandboxAdmin",
    "SandboxAdminError",
    "SandboxStats",
    "SandboxTransport",
    "SessionInfo",
    "SessionState",
    "create_app",
    "run_forever",
    "serve",
}


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def test_all_is_exactly_the_public_names_and_each_resolves() -> None:
    assert set(knai.testing.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(knai.testing, name) is not None
    assert set(dir(knai.testing)) >= PUBLIC


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        knai.testing.no_such_name  # noqa: B018


def test_import_knai_skips_the_sandbox_and_import_knai_testing_skips_the_server_stack() -> None:
    loaded = _python(
        "import sys, knai\n"
        "print('knai.testing' in sys.modules)\n"
        "import knai.testing, knai.testing.pytest_plugin\n"
        "heavy = ('starlette', 'uvicorn', 'knai.testing._app')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    assert loaded.splitlines() == ["False", "[]"]


def test_pytest_plugin_fixtures_serve_a_working_sandbox(tmp_path: Path) -> None:
    (tmp_path / "test_uses_fixtures.py").write_text(
        "import httpx\n"
        "def test_in_process(knai_sandbox):\n"
        "    assert knai_sandbox.admin.balance('demo-provider', 'demo-user') == 100_000\n"
        "def test_served(knai_sandbox_server):\n"
        "    url = knai_sandbox_server.url + '/_sandbox/stats'\n"
        "    assert httpx.get(url, trust_env=False).status_code == 200\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "knai.testing.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
