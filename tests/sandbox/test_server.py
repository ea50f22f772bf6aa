"""Serving the sandbox with uvicorn: start, stop, loopback only, foreground mode."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import knai.testing
from knai.testing import DEMO_PROVIDER_SLUG, DEMO_USERNAME, RunningSandbox, Sandbox, serve

from .conftest import PROTOCOL_HEADERS, STATUS_PATH

# The pytest plugin's session-wide server (tests/test_plugin*.py) lives until the
# run ends; these tests count the servers they start themselves.
_EARLIER: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _ignore_earlier_servers() -> None:
    _EARLIER.clear()
    _EARLIER.update(t for t in threading.enumerate() if t.name == "knai-sandbox-server")


def _server_threads() -> list[threading.Thread]:
    return [
        t for t in threading.enumerate() if t.name == "knai-sandbox-server" and t not in _EARLIER
    ]


def test_serve_listens_on_a_free_loopback_port_and_leaves_nothing_behind() -> None:
    with serve() as running:
        host, port = running.url.removeprefix("http://").split(":")
        assert host == "127.0.0.1"
        assert httpx.get(f"{running.url}/_sandbox/stats", trust_env=False).status_code == 200
        assert len(_server_threads()) == 1

    assert _server_threads() == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.url}/_sandbox/stats", trust_env=False)
    assert int(port) > 0


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.com"])  # noqa: S104
def test_serve_refuses_to_listen_beyond_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"), serve(host=host):
        pass  # pragma: no cover


def test_serve_beyond_loopback_only_when_allowed_and_the_refusal_says_how() -> None:
    with pytest.raises(ValueError, match="allow_remote=True"), serve(host="0.0.0.0"):  # noqa: S104
        pass  # pragma: no cover
    with serve(host="0.0.0.0", allow_remote=True) as running:  # noqa: S104
        port = running.url.rsplit(":", 1)[1]
        assert running.url == f"http://0.0.0.0:{port}"
        reply = httpx.get(f"http://127.0.0.1:{port}/_sandbox/stats", trust_env=False)
        assert reply.status_code == 200


def test_serve_on_a_taken_port_raises_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"), serve(port=taken.getsockname()[1]):
            pass  # pragma: no cover
    assert _server_threads() == []


def test_serve_on_ipv6_loopback_brackets_the_url() -> None:
    if not socket.has_ipv6:  # pragma: no cover - depends on the machine
        pytest.skip("no IPv6")
    try:
        with serve(host="::1") as running:
            assert running.url.startswith("http://[::1]:")
            assert httpx.get(f"{running.url}/_sandbox/stats", trust_env=False).status_code == 200
    except OSError:  # pragma: no cover - IPv6 disabled on this machine
        pytest.skip("IPv6 loopback unavailable")


def test_in_process_and_served_views_share_one_ledger_and_fault_plan(sandbox: Sandbox) -> None:
    sandbox.admin.inject_fault("status", status=503)
    with sandbox.serve() as running, httpx.Client(base_url=running.url) as client:
        params = {"provider_username": DEMO_USERNAME}
        first = client.get(STATUS_PATH, params=params, headers=PROTOCOL_HEADERS)
        running.admin.create_user(DEMO_PROVIDER_SLUG, "made-over-http", balance=7)

    assert first.status_code == 503
    assert sandbox.admin.balance(DEMO_PROVIDER_SLUG, "made-over-http") == 7
    assert running.ledger is sandbox.ledger


def test_served_answers_take_about_a_millisecond_not_a_delayed_ack(
    server: RunningSandbox,
) -> None:
    """TCP_NODELAY is on: without it every answer waited ~40 ms on loopback."""
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        client.get("/_sandbox/stats")
        started = time.perf_counter()
        for _ in range(20):
            client.get("/_sandbox/stats")
    assert time.perf_counter() - started < 0.5


def test_run_forever_serves_in_the_foreground_until_sigint() -> None:
    src = Path(knai.testing.__file__).resolve().parents[2]
    script = (
        "import sys\n"
        "from knai.testing import run_forever\n"
        "try:\n"
        "    run_forever(port=0, on_ready=lambda url: print(url, flush=True))\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().decode().strip()
            assert url.startswith("http://127.0.0.1:")
            assert httpx.get(f"{url}/_sandbox/stats", trust_env=False).status_code == 200
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=10)
        finally:
            if process.poll() is None:  # pragma: no cover - only when the test fails
                process.kill()
    assert process.returncode == 0, stderr.decode()
    assert stderr == b""  # prints nothing of its own, logs nothing unasked
