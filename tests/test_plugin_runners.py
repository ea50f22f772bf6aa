"""The pytest plugin in a user's own pytest run: under anyio or pytest-asyncio, without
the sandbox extra, and with one sandbox server per session reset between tests.

Each test writes a small test file into a temporary project and runs pytest on
it in a subprocess, so the plugin loads through its entry point as it does for
a user, with the plugins (`-p no:...`) and the modules that user would have.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

INSTALL_HINT = 'pip install "knai-provider[sandbox]"'

ASYNC_CHARGE = """
async def _charge(knai_async_provider, knai_sandbox_server):
    admin = knai_sandbox_server.admin
    token = admin.open_session("demo-provider", "demo-user").session_token
    result = await knai_async_provider.charge(token, 100, "gpt-4")
    assert admin.balance("demo-provider", "demo-user") == result.remaining_balance == 99_900
    await knai_async_provider.get_session("demo-user")
"""

# Makes starlette and uvicorn unimportable, as in an install without the extra.
BLOCK_EXTRA = """
import sys

class _NoSandboxExtra:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("starlette", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoSandboxExtra())
"""


def run_pytest(
    tmp_path: Path, test_source: str, *options: str, block_extra: bool = False
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(test_source))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KNAI_"))}
    if "no:asyncio" not in options:
        # pytest-asyncio itself warns at start-up (an error under -W error) while unset.
        options = ("-o", "asyncio_default_fixture_loop_scope=function", *options)
    if block_extra:
        (tmp_path / "sitecustomize.py").write_text(BLOCK_EXTRA)
        env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", *options],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def outcome(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


ANYIO_TEST = (
    """
import pytest

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
async def test_async_charge(knai_async_provider, knai_sandbox_server):
    await _charge(knai_async_provider, knai_sandbox_server)
"""
    + ASYNC_CHARGE
)

ASYNCIO_TEST = (
    """
import pytest

@pytest.mark.asyncio
async def test_async_charge(knai_async_provider, knai_sandbox_server):
    await _charge(knai_async_provider, knai_sandbox_server)
"""
    + ASYNC_CHARGE
)


@pytest.mark.parametrize(
    ("runner", "source", "options"),
    [
        ("anyio alone", ANYIO_TEST, ("-p", "no:asyncio")),
        ("anyio beside pytest-asyncio", ANYIO_TEST, ()),
        ("pytest-asyncio strict alone", ASYNCIO_TEST, ("-p", "no:anyio")),
        ("pytest-asyncio strict beside anyio", ASYNCIO_TEST, ()),
        ("pytest-asyncio auto", ASYNCIO_TEST, ("-p", "no:anyio", "-o", "asyncio_mode=auto")),
    ],
)
def test_knai_async_provider_charges_under_each_async_runner(
    tmp_path: Path, runner: str, source: str, options: tuple[str, ...]
) -> None:
    """The async fixture opens, charges and closes on the test's loop, warning-free (-W error)."""
    done = run_pytest(tmp_path, source, *options)
    assert done.returncode == 0, outcome(done)
    assert "1 passed" in done.stdout


def test_knai_async_provider_in_an_unmarked_test_says_how_to_run_it(tmp_path: Path) -> None:
    source = """
    def test_sync_test_asks_for_the_async_fixture(knai_async_provider):
        pass
    """
    done = run_pytest(tmp_path, source)
    assert done.returncode == 1
    assert "@pytest.mark.anyio" in done.stdout
    assert "@pytest.mark.asyncio" in done.stdout


@pytest.mark.parametrize(
    "fixture", ["knai_sandbox", "knai_sandbox_server", "knai_provider", "knai_async_provider"]
)
def test_every_fixture_without_the_sandbox_extra_names_the_extra(
    tmp_path: Path, fixture: str
) -> None:
    marker = "@pytest.mark.asyncio\nasync " if fixture == "knai_async_provider" else ""
    source = f"import pytest\n\n{marker}def test_it({fixture}):\n    pass\n"
    done = run_pytest(tmp_path, source, block_extra=True)
    assert done.returncode == 1, outcome(done)
    assert INSTALL_HINT in done.stdout
    assert re.search(
        r"the \w+ fixture needs the sandbox extra \((starlette|uvicorn) is not", done.stdout
    )
    assert "No module named" not in outcome(done)
    assert "Traceback" not in outcome(done)


@pytest.mark.parametrize("name", ["Sandbox", "serve", "create_app", "SandboxTransport"])
def test_importing_the_sandbox_without_the_extra_names_the_extra(tmp_path: Path, name: str) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCK_EXTRA)
    script = f"from knai.testing import {name}"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: knai.testing.")
    assert INSTALL_HINT in last


def test_the_ledger_and_demo_names_import_without_the_extra(tmp_path: Path) -> None:
    """Only what serves HTTP needs starlette: a Ledger and the demo constants do not."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_EXTRA)
    script = "from knai.testing import DEMO_API_KEY, Ledger; Ledger(demo=True); print('ok')"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


def test_one_server_serves_the_session_and_each_test_starts_from_a_reset_wallet(
    tmp_path: Path,
) -> None:
    """Three tests share one URL; what one leaves (charges, users, faults) the next never sees."""
    source = """
    import pytest

    URLS = []

    @pytest.mark.parametrize("round", range(3))
    def test_leave_a_mess(round, knai_provider, knai_sandbox_server, knai_sandbox):
        admin = knai_sandbox_server.admin
        URLS.append(knai_sandbox_server.url)
        assert len(set(URLS)) == 1
        assert knai_sandbox_server.ledger is knai_sandbox.ledger
        assert admin.balance("demo-provider", "demo-user") == 100_000
        assert admin.charges("demo-provider", "demo-user") == []
        assert admin.faults() == []
        assert admin.stats().requests["charge"] == 0
        admin.create_user("demo-provider", "alice", balance=5)
        token = admin.open_session("demo-provider", "demo-user").session_token
        result = knai_provider.charge(token, 100, "gpt-4", idempotency_key="same-key")
        assert result.remaining_balance == 99_900
        admin.inject_fault("charge", status=503, times=5)
    """
    done = run_pytest(tmp_path, source)
    assert done.returncode == 0, outcome(done)
    assert "3 passed" in done.stdout


def test_an_overridden_knai_sandbox_is_the_wallet_served(tmp_path: Path) -> None:
    """A project's own `knai_sandbox` (its own ledger) is what the server and provider reach."""
    source = """
    import pytest
    from knai.testing import Ledger, Sandbox

    @pytest.fixture
    def knai_sandbox():
        ledger = Ledger()
        ledger.add_provider("demo-provider", "sk_test_knai_sandbox_demo_key_not_secret")
        ledger.add_user("demo-provider", "carol", balance=7)
        with Sandbox(ledger) as sandbox:
            yield sandbox

    def test_served(knai_sandbox, knai_sandbox_server, knai_provider):
        assert knai_sandbox_server.ledger is knai_sandbox.ledger
        token = knai_sandbox_server.admin.open_session("demo-provider", "carol").session_token
        assert knai_provider.charge(token, 5, "gpt-4").remaining_balance == 2
        assert knai_sandbox.ledger.balance("demo-provider", "carol") == 2
    """
    done = run_pytest(tmp_path, source)
    assert done.returncode == 0, outcome(done)
    assert "1 passed" in done.stdout
