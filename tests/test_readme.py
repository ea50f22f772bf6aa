"""The README's runnable examples run as written (against the sandbox)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import respx

from tests.conftest import TOKEN
from tests.support.twin import ACTIVE, CHARGE, CHARGED, STATUS, reply, sent_json

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def block_containing(text: str) -> str:
    matches = [block for block in python_blocks() if text in block]
    assert len(matches) == 1, f"expected one README block with {text!r}"
    return matches[0]


def test_the_two_commands_come_first() -> None:
    """The README opens with the demo command and the test command that .ci/run reads."""
    head = README.read_text().split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", head, flags=re.DOTALL)
    assert commands[0] == 'python -m pip install -e ".[sandbox]" && python -m knai demo'
    assert commands[1].startswith('python -m pip install -e ".[dev]" && ')
    for check in ("ruff check", "ruff format --check", "mypy", "pytest"):
        assert check in commands[1]
    assert "<!-- test-command -->" in head
    assert "README.md" in (README.parent / ".ci" / "run").read_text()


def test_sandbox_example_without_pytest_runs() -> None:
    code = block_containing("with Sandbox() as sandbox:")
    code += "\n    provider.close()\n    http.close()\n"
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README


def test_pytest_fixture_example_passes(tmp_path: Path) -> None:
    """The fixture example, saved as a user's test file, passes under pytest."""
    (tmp_path / "test_user.py").write_text(block_containing("def test_charges_the_wallet"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.parametrize("name", ["Quick start", "Async", "Retries and idempotency"])
def test_sdk_examples_compile(name: str) -> None:
    """Examples that need real credentials at least compile."""
    section = README.read_text().split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL):
        compile(block, f"README.md ({name})", "exec")


# -- the published 0.1.0 README example: kept here once ------------------------------------------


def run_010_example() -> None:
    # The published 0.1.0 README example verbatim, except bodies included.
    from knai import InsufficientBalanceError, KNAIProvider, SessionExpiredError

    provider = KNAIProvider(provider_api_key="...", provider_slug="...")
    session = provider.wait_for_session(provider_username="user123")
    session_token = session["session_token"]
    try:
        result = provider.charge(session_token=session_token, amount_tokens=1500, model="gpt-4")
        print(f"Charge successful: {result}")
    except SessionExpiredError:
        print("Session expired")
    except InsufficientBalanceError:
        print("Insufficient balance")


def test_the_readme_shows_the_010_example_verbatim() -> None:
    """The README's "0.1.0 example" block is the published one, its except bodies elided."""
    body = textwrap.dedent(inspect.getsource(run_010_example).split("\n", 3)[3])  # past import
    body = body.replace('print("Session expired")', "...")
    body = body.replace('print("Insufficient balance")', "...")
    imports, rest = block_containing('provider_slug="..."').split("\n", 1)
    # ruff sorts the names imported in this file; the README keeps 0.1.0's order.
    assert imports == "from knai import KNAIProvider, SessionExpiredError, InsufficientBalanceError"
    assert rest == body


def test_010_example_prints_exactly_the_charge_the_wallet_answered(
    api: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    api.get(STATUS).respond(200, json={"status": "active", "session_token": TOKEN})
    charged = api.post(CHARGE).respond(200, json={"charge_id": "ch_1"})
    run_010_example()
    assert capsys.readouterr().out == "Charge successful: {'charge_id': 'ch_1'}\n"
    assert charged.calls.last.request.headers["X-Session-Token"] == TOKEN
    assert sent_json(charged.calls.last.request) == {"amount_tokens": 1500, "model": "gpt-4"}


def test_010_example_charges_and_prints_without_the_token(
    api: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    api.get(STATUS, params={"provider_username": "user123"}).mock(return_value=reply(body=ACTIVE))
    charged = api.post(CHARGE).mock(return_value=reply(body={**CHARGED, "session_token": TOKEN}))
    run_010_example()
    out, err = capsys.readouterr()
    assert out.startswith("Charge successful: ")
    assert "'charge_id': 'ch_1'" in out
    assert TOKEN not in out + err
    request = charged.calls.last.request
    assert sent_json(request) == {"amount_tokens": 1500, "model": "gpt-4"}
    assert request.headers["X-Session-Token"] == TOKEN
    assert request.headers["X-Provider-API-Key"] == "..."


@pytest.mark.parametrize(
    ("status", "printed"),
    [(403, "Session expired"), (410, "Session expired"), (402, "Insufficient balance")],
)
def test_010_example_catches_the_documented_errors(
    api: respx.MockRouter, capsys: pytest.CaptureFixture[str], status: int, printed: str
) -> None:
    api.get(STATUS).mock(return_value=reply(body=ACTIVE))
    api.post(CHARGE).mock(return_value=reply(status, {"error": "no"}))
    run_010_example()
    assert capsys.readouterr().out == printed + "\n"
