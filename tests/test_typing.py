"""What a type checker tells a user: clean code passes mypy and pyright, typos fail both.

These run the checkers themselves (mypy --strict from mypy.ini, pyright strict
from pyrightconfig.json), so the README's test command covers them.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MUST_FAIL = ROOT / "tests" / "typing" / "must_fail.py"
README = ROOT / "README.md"

# Names the README's fragments take as given (a provider, a token, ...), declared
# for the checker only; whole examples redefine what they use.
PRELUDE = """\
from __future__ import annotations
import httpx
from knai import *
from knai.testing import *
from knai.metering import *
provider: KNAIProvider
token: str
key: str
request_id: str
admin: SandboxAdmin
completion: object  # an LLM SDK's response
def queue_for_replay(key: str | None) -> None: ...
"""


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )


def _pyright(*args: str, cwd: Path = ROOT) -> dict[str, object]:
    done = _run("pyright", "--outputjson", *args, cwd=cwd)
    try:
        report: dict[str, object] = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"pyright did not run: {done.stdout}{done.stderr}")
    return report


def _pyright_errors(report: dict[str, object]) -> list[dict[str, object]]:
    diagnostics = report.get("generalDiagnostics", [])
    assert isinstance(diagnostics, list)
    return [d for d in diagnostics if isinstance(d, dict) and d.get("severity") == "error"]


# Reported on must_fail.py's import lines whether or not the name exists.
_NOT_A_TYPE_ERROR = {"reportUnusedImport", "reportUnusedVariable"}


def _pyright_on(path: Path, tmp_path: Path) -> set[int]:
    """Lines (1-based) where pyright strict reports a type error in `path` alone."""
    config = {
        "include": [os.path.relpath(path, tmp_path)],
        "pythonVersion": "3.10",
        "typeCheckingMode": "strict",
        "venvPath": str(Path(sys.prefix).parent),
        "venv": Path(sys.prefix).name,
    }
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    report = _pyright("-p", str(tmp_path / "pyrightconfig.json"))
    lines = set()
    for error in _pyright_errors(report):
        if error.get("rule") in _NOT_A_TYPE_ERROR:
            continue
        where = error["range"]
        assert isinstance(where, dict)
        lines.add(where["start"]["line"] + 1)
    return lines


def _mypy_errors(*paths: Path, config: Path = ROOT / "mypy.ini") -> list[tuple[str, int, str]]:
    done = _run("mypy", "--config-file", str(config), *map(str, paths))
    found = re.findall(r"^(.+?):(\d+): error: (.*)$", done.stdout, flags=re.MULTILINE)
    if done.returncode not in (0, 1) or (done.returncode == 1 and not found):
        pytest.fail(f"mypy did not run: {done.stdout}{done.stderr}")
    return [(path, int(line), message) for path, line, message in found]


def test_pyright_strict_is_clean_over_the_package_and_typing_files() -> None:
    errors = _pyright_errors(_pyright())
    assert errors == [], "\n".join(f"{e['file']}:{e['range']}: {e['message']}" for e in errors)


def test_public_types_are_complete_for_pyright_verifytypes() -> None:
    """`pyright --verifytypes knai --ignoreexternal` scores 100 %: nothing public is ambiguous."""
    report = _pyright("--verifytypes", "knai", "--ignoreexternal")
    completeness = report["typeCompleteness"]
    assert isinstance(completeness, dict)
    problems = [
        f"{symbol['name']}: {[d['message'] for d in symbol['diagnostics']]}"
        for symbol in completeness["symbols"]
        if symbol["diagnostics"] and symbol.get("isExported", True)
    ]
    assert completeness["completenessScore"] == 1.0, "\n".join(problems)


def _marked_lines() -> set[int]:
    lines = MUST_FAIL.read_text().splitlines()
    return {number for number, line in enumerate(lines, 1) if line.endswith("# must fail")}


def test_must_fail_file_marks_every_kind_of_typo() -> None:
    text = MUST_FAIL.read_text()
    for typo in (
        "Sesion",
        "Sandbx",
        "Metr",
        "SesionCache",
        "Outbx",
        "Paywal",
        "KNAIProvidr",
        '"actve"',
        "session.status =",
        'tokens="5"',
    ):
        assert any(typo in line and line.endswith("# must fail") for line in text.splitlines())
    assert "idempotency=" in text


def test_mypy_rejects_every_marked_line_and_nothing_else() -> None:
    lines = {line for _, line, _ in _mypy_errors(MUST_FAIL)}
    assert lines == _marked_lines()


def test_mypy_without_the_pydantic_plugin_agrees(tmp_path: Path) -> None:
    """A user's mypy may not load pydantic's plugin: the frozen models and the
    typed fields must not depend on it."""
    config = tmp_path / "mypy.ini"
    # Its own cache, kept between runs, so as not to invalidate the main one.
    cache = ROOT / ".mypy_cache" / "without-plugin"
    config.write_text(f"[mypy]\npython_version = 3.10\nstrict = True\ncache_dir = {cache}\n")
    usage = ROOT / "tests" / "typing" / "usage.py"
    assert _mypy_errors(usage, config=config) == []
    assert {line for _, line, _ in _mypy_errors(MUST_FAIL, config=config)} == _marked_lines()


def test_pyright_rejects_every_marked_line_and_nothing_else(tmp_path: Path) -> None:
    assert _pyright_on(MUST_FAIL, tmp_path) == _marked_lines()


# -- the README's and the docstrings' examples ---------------------------------


def _readme_blocks() -> list[tuple[str, str]]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return [(f"README block {n}", block) for n, block in enumerate(blocks, 1)]


def _doctest_source(code: str) -> str:
    """A doctest's statements (its `>>>` and `...` lines), without the expected output."""
    if not code.startswith(">>>"):
        return code
    source = [line[4:] for line in code.splitlines() if line.startswith((">>> ", "... "))]
    return "\n".join(source)


def _literal_blocks(docstring: str) -> list[str]:
    """The examples of a docstring: reST literal blocks (after a line ending in
    `::`) and Google-style `Example:` sections."""
    blocks: list[str] = []
    lines = docstring.splitlines()
    for number, line in enumerate(lines):
        if not line.rstrip().endswith("::") and line.strip() not in ("Example:", "Examples:"):
            continue
        body: list[str] = []
        for following in lines[number + 1 :]:
            if following.strip() and not following.startswith((" ", "\t")):
                break
            body.append(following)
        code = _doctest_source(textwrap.dedent("\n".join(body)).strip()) + "\n"
        if "await " in code or "async with" in code:
            # An async example is the body of a coroutine.
            code = "async def _example() -> None:\n" + textwrap.indent(code, "    ")
        blocks.append(code)
    return blocks


def _docstring_blocks() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in sorted((ROOT / "src" / "knai").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(
                node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            ):
                continue
            docstring = ast.get_docstring(node, clean=False)
            # Strip the docstring's own indentation (that of the body it opens)
            # and no more, so that a block stays indented under its `::` line.
            indent = 0 if isinstance(node, ast.Module) else node.col_offset + 4
            text = "\n".join(line[indent:] for line in (docstring or "").splitlines())
            for block in _literal_blocks(text):
                if "├──" in block:  # the exception tree, a drawing
                    continue
                found.append((f"{path.relative_to(ROOT)} docstring", block))
    return found


def test_examples_are_found() -> None:
    assert len(_readme_blocks()) >= 8
    blocks = _docstring_blocks()
    assert len({where for where, _ in blocks}) >= 5
    assert all(block.strip() for _, block in blocks)


def test_readme_and_docstring_examples_type_check_under_mypy_strict(tmp_path: Path) -> None:
    files: dict[str, str] = {}
    for number, (where, block) in enumerate(_readme_blocks() + _docstring_blocks()):
        path = tmp_path / f"example_{number}.py"
        path.write_text(PRELUDE + block)
        files[path.name] = where
    errors = _mypy_errors(*(tmp_path / name for name in files))
    assert errors == [], "\n".join(
        f"{files[Path(path).name]}, line {line - PRELUDE.count(chr(10))}: {message}"
        for path, line, message in errors
    )


def test_no_example_works_around_an_optional_token() -> None:
    """The typed path is the easy one: nothing writes `session_token or ""`.

    (Other `x or ""` are not about tokens: an LLM chunk's `delta.content` is
    Optional in the LLM SDKs, which is theirs to type.)
    """
    workaround = re.compile(r"""token\b[^\n]*\bor\s*(?:""|'')""")
    texts = [README.read_text(), *(p.read_text() for p in (ROOT / "tests" / "typing").glob("*"))]
    for text in texts:
        assert workaround.search(text) is None, workaround.search(text)
    assert workaround.search('charge(session.session_token or "", 5, "m")')
