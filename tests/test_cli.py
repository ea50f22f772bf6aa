"""The `knai` command, run as a user runs it: in a subprocess, against a real sandbox."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knai import _cli
from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, SandboxAdmin


def knai(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "knai", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """`knai sandbox --port 0` in the foreground of a subprocess; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "knai", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, f"no URL in {first!r}"
        yield match.group(0)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def env(sandbox_url: str) -> dict[str, str]:
    return {
        "KNAI_BASE_URL": sandbox_url,
        "KNAI_API_KEY": DEMO_API_KEY,
        "KNAI_PROVIDER_SLUG": DEMO_PROVIDER_SLUG,
    }


@pytest.fixture
def admin(sandbox_url: str) -> Iterator[SandboxAdmin]:
    with SandboxAdmin(sandbox_url) as handle:
        yield handle


@pytest.fixture
def user(admin: SandboxAdmin, request: pytest.FixtureRequest) -> str:
    name = f"cli-{request.node.name[-20:]}".replace("[", "-").replace("]", "")
    admin.create_user(DEMO_PROVIDER_SLUG, name, balance=1_000)
    return name


def _json(text: str) -> Any:
    return json.loads(text)


def test_help_lists_every_subcommand_and_exit_code() -> None:
    done = knai("--help")
    assert done.returncode == 0
    for word in ("demo", "sandbox", "session", "wait", "charge"):
        assert word in done.stdout
    for cls, code in _cli.EXIT_CODES:
        assert f"{code} {cls.__name__}" in " ".join(done.stdout.split())


def test_demo_tells_the_end_users_story_and_exits_zero() -> None:
    """`knai demo` (the README's first command): sandbox, FakeLLM and the paid chat
    example on loopback; an end user from a 402 to a fault charged exactly once."""
    done = knai("demo")
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [
        "HTTP 402 no_active_session: open a KNAI Wallet session",
        "the user opens a session",
        "HTTP 200: 'tell me a story tell me a story'",
        "streamed: 'tell me a story tell me a story'",
        "the stream ended with event: error 'insufficient_balance'",
        "retried the charge with the same Idempotency-Key",
        "the wallet holds 1 new charge",
        "ledger agrees: yes",
    ]
    positions = [done.stdout.find(step) for step in steps]
    assert -1 not in positions, done.stdout
    assert positions == sorted(positions)
    balances = [int(b) for b in re.findall(r"balance now (\d+)", done.stdout)]
    assert balances == sorted(balances, reverse=True)
    assert len(set(balances)) == 2  # it fell with each paid chat
    assert "session_token': '<redacted>'" in done.stdout
    assert "sk-paid-chat-" not in done.stdout  # the end user's API key is not printed


def test_demo_against_a_running_sandbox(sandbox_url: str) -> None:
    done = knai("demo", "--base-url", sandbox_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sandbox_url in done.stdout
    assert "ledger agrees: yes" in done.stdout


def test_sandbox_prints_its_url_and_demo_credentials(sandbox_url: str, env: dict[str, str]) -> None:
    # The fixture already read the URL from the first line; the session command proves it serves.
    done = knai("session", "nobody", env=env)
    assert done.returncode == 0
    assert _json(done.stdout)["result"] == {"status": "inactive", "provider_username": "nobody"}


def test_session_wait_and_charge_print_json_without_secrets(
    env: dict[str, str], admin: SandboxAdmin, user: str
) -> None:
    opened = admin.open_session(DEMO_PROVIDER_SLUG, user)
    waited = knai("wait", user, "--wait-timeout", "5", "--poll-interval", "0.05", env=env)
    assert waited.returncode == 0
    body = _json(waited.stdout)
    assert body["ok"] is True
    assert body["result"]["status"] == "active"
    assert body["result"]["session_token"] == "<redacted>"
    assert body["request_id"].startswith("req_")

    charged = knai(
        "charge",
        "--amount",
        "250",
        "--model",
        "gpt-4",
        "--idempotency-key",
        "cli-key-1",
        env={**env, "KNAI_SESSION_TOKEN": opened.session_token},
    )
    assert charged.returncode == 0, charged.stderr
    result = _json(charged.stdout)
    assert result["idempotency_key"] == "cli-key-1"
    assert result["result"]["remaining_balance"] == 750
    assert admin.balance(DEMO_PROVIDER_SLUG, user) == 750
    for out in (waited, charged):
        assert opened.session_token not in out.stdout + out.stderr
        assert DEMO_API_KEY not in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("case", "expected_type", "expected_code"),
    [
        ("bad-key", "InvalidAPIKeyError", 3),
        ("too-much", "InsufficientBalanceError", 4),
        ("bad-token", "SessionExpiredError", 5),
        ("no-token", "ValueError", 2),
        ("bad-amount", "ValueError", 2),
    ],
)
def test_charge_errors_have_distinct_exit_codes(
    env: dict[str, str],
    admin: SandboxAdmin,
    user: str,
    case: str,
    expected_type: str,
    expected_code: int,
) -> None:
    token = admin.open_session(DEMO_PROVIDER_SLUG, user).session_token
    amount, run_env = "10", {**env, "KNAI_SESSION_TOKEN": token}
    if case == "bad-key":
        run_env["KNAI_API_KEY"] = "sk_test_wrong_key"
    elif case == "too-much":
        amount = "5000"
    elif case == "bad-token":
        run_env["KNAI_SESSION_TOKEN"] = "not-a-real-token"
    elif case == "no-token":
        del run_env["KNAI_SESSION_TOKEN"]
    elif case == "bad-amount":
        amount = "0"
    done = knai("charge", "--amount", amount, "--model", "gpt-4", env=run_env)
    assert done.returncode == expected_code, done.stderr
    error = _json(done.stderr)["error"]
    assert error["type"] == expected_type
    assert token not in done.stdout + done.stderr
    assert admin.balance(DEMO_PROVIDER_SLUG, user) == 1_000


def test_credentials_from_the_environment_lose_surrounding_whitespace(
    env: dict[str, str], admin: SandboxAdmin, user: str
) -> None:
    """An env file's CR or tab around the key, the slug or the session token is not a typo."""
    token = admin.open_session(DEMO_PROVIDER_SLUG, user).session_token
    run_env = {
        **env,
        "KNAI_API_KEY": f" {DEMO_API_KEY}\t",
        "KNAI_PROVIDER_SLUG": f"{DEMO_PROVIDER_SLUG}\r\n",
        "KNAI_SESSION_TOKEN": f"{token}\r\n",
    }
    done = knai("charge", "--amount", "10", "--model", "gpt-4", env=run_env)
    assert done.returncode == 0, done.stderr
    assert admin.balance(DEMO_PROVIDER_SLUG, user) == 990


def test_a_blank_session_token_reads_as_not_set(env: dict[str, str]) -> None:
    done = knai(
        "charge", "--amount", "10", "--model", "gpt-4", env={**env, "KNAI_SESSION_TOKEN": " \n"}
    )
    assert done.returncode == 2
    assert "KNAI_SESSION_TOKEN is not set" in _json(done.stderr)["error"]["message"]


def test_wait_timeout_exits_6(env: dict[str, str], user: str) -> None:
    done = knai("wait", user, "--wait-timeout", "0.3", "--poll-interval", "0.05", env=env)
    assert done.returncode == 6
    assert _json(done.stderr)["error"]["type"] == "SessionWaitTimeoutError"


def test_unreachable_base_url_exits_9(env: dict[str, str]) -> None:
    done = knai(
        "session",
        "someone",
        "--max-retries",
        "0",
        env={**env, "KNAI_BASE_URL": "http://127.0.0.1:9"},
    )
    assert done.returncode == 9
    assert _json(done.stderr)["error"]["type"] == "APIConnectionError"


def test_missing_credentials_name_the_variable() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KNAI_")}
    done = subprocess.run(
        [sys.executable, "-m", "knai", "session", "someone"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
        check=False,
    )
    assert done.returncode == 2
    assert "KNAI_API_KEY" in _json(done.stderr)["error"]["message"]


def test_demo_without_the_sandbox_extra_says_what_to_install(tmp_path: Path) -> None:
    """With starlette/uvicorn unimportable, the command names the extra instead of a traceback."""
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util as u\n"
        "_find = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n in ('starlette', 'uvicorn') else _find(n, *a)\n"
    )
    done = knai("demo", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 1
    assert 'pip install "knai-provider[sandbox]"' in done.stderr
    assert "Traceback" not in done.stderr


# -- issue 9, item 12: what a new user types wrong, answered in one line -------------------


def test_version_prints_the_package_version() -> None:
    from knai import __version__

    done = knai("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"knai {__version__}"


@pytest.mark.parametrize("command", ["", "demo", "sandbox", "session", "wait", "charge"])
def test_every_help_says_where_the_api_key_comes_from(command: str) -> None:
    done = knai(*([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "KNAI_API_KEY" in text
    if command not in ("demo", "sandbox"):
        assert "$KNAI_PROVIDER_SLUG" in text
        assert "$KNAI_BASE_URL" in text
    if command in ("", "charge"):
        assert "$KNAI_SESSION_TOKEN" in text


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("sandbox", "--port", "99999"), "--port"),
        (("sandbox", "--port", "-1"), "--port"),
        (("sandbox", "--port", "http"), "--port"),
        (("wait", "someone", "--wait-timeout", "-3"), "--wait-timeout"),
        (("wait", "someone", "--wait-timeout", "nan"), "--wait-timeout"),
        (("wait", "someone", "--poll-interval", "0"), "--poll-interval"),
        (("session", "someone", "--timeout", "-1"), "--timeout"),
        (("session", "someone", "--timeout", "inf"), "--timeout"),
        (("session", "someone", "--max-retries", "-2"), "--max-retries"),
    ],
)
def test_out_of_range_flags_are_argparse_errors_naming_the_flag(
    args: tuple[str, ...], flag: str
) -> None:
    done = knai(*args)
    assert done.returncode == 2
    assert f"error: argument {flag}: must be" in done.stderr
    assert "Traceback" not in done.stderr


def _message(done: subprocess.CompletedProcess[str]) -> str:
    return str(_json(done.stderr)["error"]["message"])


@pytest.mark.parametrize(
    ("overrides", "names", "python_name"),
    [
        ({"KNAI_API_KEY": None}, "KNAI_API_KEY", "provider_api_key"),
        ({"KNAI_API_KEY": "sk has spaces"}, "KNAI_API_KEY", "provider_api_key"),
        ({"KNAI_PROVIDER_SLUG": None}, "KNAI_PROVIDER_SLUG", "provider_slug"),
        ({"KNAI_BASE_URL": "ftp://127.0.0.1"}, "KNAI_BASE_URL", "base_url"),
    ],
)
def test_credential_errors_name_the_environment_variable_not_the_keyword(
    env: dict[str, str], overrides: dict[str, str | None], names: str, python_name: str
) -> None:
    run_env = {**os.environ, **env}
    for variable, value in overrides.items():
        if value is None:
            run_env.pop(variable, None)
        else:
            run_env[variable] = value
    done = subprocess.run(
        [sys.executable, "-m", "knai", "session", "someone"],
        capture_output=True,
        text=True,
        timeout=60,
        env=run_env,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    message = _message(done)
    assert names in message
    assert python_name not in message
    assert "=" not in message


def test_a_bad_base_url_flag_is_named_as_the_flag(env: dict[str, str]) -> None:
    done = knai("session", "someone", "--base-url", "ftp://127.0.0.1", env=env)
    assert done.returncode == 2
    assert _message(done).startswith("--base-url ")


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--amount", "0", "--model", "gpt-4"), "--amount"),
        (("--amount", "5", "--model", ""), "--model"),
        (("--amount", "5", "--model", "m", "--idempotency-key", "k" * 300), "--idempotency-key"),
    ],
)
def test_charge_argument_errors_name_the_flag(
    env: dict[str, str], args: tuple[str, ...], flag: str
) -> None:
    done = knai("charge", *args, env={**env, "KNAI_SESSION_TOKEN": "tok_unused_here"})
    assert done.returncode == 2, done.stderr
    message = _message(done)
    assert message.startswith(flag), message
    for keyword in ("amount_tokens", "model=", "idempotency_key"):
        assert keyword not in message


def test_a_replayed_charge_says_it_was_a_replay(
    env: dict[str, str], admin: SandboxAdmin, user: str
) -> None:
    token = admin.open_session(DEMO_PROVIDER_SLUG, user).session_token
    run_env = {**env, "KNAI_SESSION_TOKEN": token}
    charge = ("charge", "--amount", "100", "--model", "gpt-4", "--idempotency-key", "replay-me")
    first, second = knai(*charge, env=run_env), knai(*charge, env=run_env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert _json(first.stdout)["replayed"] is False
    assert "replayed" not in first.stderr
    assert _json(second.stdout)["replayed"] is True
    assert "knai charge: replayed: Idempotency-Key replay-me" in second.stderr
    assert _json(first.stdout)["result"] == _json(second.stdout)["result"]
    assert admin.balance(DEMO_PROVIDER_SLUG, user) == 900


def test_a_refusal_answered_from_its_key_is_flagged_replayed(
    env: dict[str, str], admin: SandboxAdmin, user: str
) -> None:
    """The wallet records a 402 under its key too: the second answer is that refusal, replayed."""
    token = admin.open_session(DEMO_PROVIDER_SLUG, user).session_token
    run_env = {**env, "KNAI_SESSION_TOKEN": token}
    charge = ("charge", "--amount", "5000", "--model", "gpt-4", "--idempotency-key", "too-much")
    first, second = knai(*charge, env=run_env), knai(*charge, env=run_env)
    assert first.returncode == second.returncode == 4
    assert _json(first.stderr)["error"]["replayed"] is False
    assert _json(second.stderr)["error"]["replayed"] is True
    assert admin.balance(DEMO_PROVIDER_SLUG, user) == 1_000


def test_sandbox_with_allow_remote_on_loopback_does_not_warn() -> None:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "knai", "sandbox", "--host", "127.0.0.2", "--port", "0"),
            "--allow-remote",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "http://127.0.0.2:" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert "WARNING" not in err


class _NotASandbox(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/_sandbox/"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def not_a_sandbox() -> Iterator[str]:
    """A loopback HTTP server that answers 200 with HTML where the sandbox's admin API lives."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotASandbox)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("where", ["refused port", "not a sandbox", "wrong path"])
def test_demo_against_no_sandbox_is_one_clear_line(
    where: str, sandbox_url: str, not_a_sandbox: str
) -> None:
    url = {
        "refused port": "http://127.0.0.1:9",
        "not a sandbox": not_a_sandbox,
        "wrong path": f"{sandbox_url}/v1",
    }[where]
    done = knai("demo", "--base-url", url)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("knai demo: ")
    assert url in lines[0]
    assert "knai sandbox" in lines[0]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1",
        "http://127.0.0.1:abc",
        "http://127.0.0.1:99999",
        "http://127.0.0.1/?",
        "http://127.0.0.1/#",
    ],
)
def test_demo_with_an_invalid_base_url_names_the_flag(url: str) -> None:
    done = knai("demo", "--base-url", url)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert _message(done).startswith("--base-url ")


def test_sandbox_on_a_non_loopback_host_needs_allow_remote() -> None:
    done = knai("sandbox", "--host", "0.0.0.0", "--port", "0")  # noqa: S104 (refused)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "--allow-remote" in done.stderr
    assert "allow_remote" not in done.stderr


def test_sandbox_with_allow_remote_serves_all_interfaces_and_warns() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "knai",
            "sandbox",
            "--host",
            "0.0.0.0",  # noqa: S104 (the point of the test)
            "--port",
            "0",
            "--allow-remote",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        warning = proc.stderr.readline()
        assert "WARNING" in warning
        assert "no authentication" in warning
        match = re.search(r"http://0\.0\.0\.0:(\d+)", proc.stdout.readline())
        assert match
        with SandboxAdmin(f"http://127.0.0.1:{match.group(1)}") as admin:
            assert admin.balance(DEMO_PROVIDER_SLUG, "demo-user") > 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_demo_against_a_running_sandbox_needs_no_sandbox_extra(
    tmp_path: Path, sandbox_url: str
) -> None:
    """Only serving needs starlette/uvicorn: a demo against --base-url is plain httpx."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('starlette', 'uvicorn'):\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, _Blocker())\n"
        "import importlib.util as u\n"
        "_find = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n in ('starlette', 'uvicorn') else _find(n, *a)\n"
    )
    done = knai("demo", "--base-url", sandbox_url, env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ledger agrees: yes" in done.stdout
