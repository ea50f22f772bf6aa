"""The project's own checks stay wired: .ci/run reads the README's test command, nox covers
every Python that requires-python admits."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _nox_pythons() -> list[str]:
    """noxfile.py's PYTHONS, read without importing nox."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PYTHONS":
            return list(ast.literal_eval(node.value))
    raise AssertionError("noxfile.py has no PYTHONS list")


def test_nox_has_a_session_for_every_minor_version_from_requires_python_on() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'^requires-python = ">=3\.(\d+)"$', pyproject, re.M)
    assert floor is not None
    minors = [int(version.split(".")[1]) for version in _nox_pythons()]
    assert minors == list(range(int(floor.group(1)), minors[-1] + 1))
    assert sys.version_info[1] in minors  # the interpreter running this is one of them


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """The line .ci/run extracts is the README's `<!-- test-command -->` block, verbatim."""
    extract = next(
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.startswith("test_command=")
    )
    done = subprocess.run(
        ["bash", "-c", f'{extract}\nprintf %s "$test_command"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- test-command -->\n```bash\n", 1)[1].split("\n```", 1)[0]
    assert done.stdout == block
