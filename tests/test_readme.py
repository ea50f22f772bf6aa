"""The README's runnable examples run as written (against the sandbox)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
