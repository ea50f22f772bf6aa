"""What `pip install knai-provider` ships: the sdist's files, and the page PyPI shows.

The sdist and wheel are built offline (`python -m build --no-isolation`, with the
build backend and its README hook from the dev extra), as a release would build them.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tarfile
import zipfile
from email import message_from_string
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A markdown link or image whose target is neither absolute nor mail: on PyPI
# it resolves against pypi.org and breaks.
RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:)[^)]*\)")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation", "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def sdist_names(dist: Path) -> list[str]:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        return [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]


def wheel_metadata(dist: Path) -> Message:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return message_from_string(archive.read(name).decode())


def sdist_metadata(dist: Path) -> Message:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        member = archive.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/PKG-INFO")
        assert member is not None
        return message_from_string(member.read().decode())


def test_the_sdist_carries_the_package_not_the_repository_tooling(dist: Path) -> None:
    names = sdist_names(dist)
    for kept in ("src/knai/__init__.py", "src/knai/py.typed", "README.md", "LICENSE"):
        assert kept in names
    for folder in (".ci/", "benchmarks/", "scripts/", "tests/", ".venv/"):
        assert not [n for n in names if n.startswith(folder)], folder
    assert not [n for n in names if n.endswith((".png", ".pyc"))]


@pytest.mark.parametrize("source", ["wheel", "sdist"])
def test_the_pypi_description_works_outside_a_checkout(dist: Path, source: str) -> None:
    """It opens with plain installs, has no editable install and no link that needs the repo."""
    metadata = wheel_metadata(dist) if source == "wheel" else sdist_metadata(dist)
    assert metadata["Description-Content-Type"] == "text/markdown"
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert description.startswith("# knai-provider\n")
    opening = description.split("\n## ", 1)[0]
    assert "pip install knai-provider" in opening
    assert 'pip install "knai-provider[sandbox]" && knai demo' in opening
    assert not re.search(r"pip install[^\n]* -e\b", description)
    assert RELATIVE_LINK.findall(description) == []
    assert "<!--" not in description
    # The README's sections themselves are there.
    for heading in ("## Quick start", "## Testing your integration", "## The `knai` command"):
        assert heading in description


def test_the_readme_itself_still_opens_with_the_checkout_commands() -> None:
    """The PyPI page is rewritten at build time; the README keeps the project's opening."""
    readme = (ROOT / "README.md").read_text()
    head, marker, _ = readme.partition("<!-- pypi-start -->")
    assert marker
    assert 'python -m pip install -e ".[sandbox]" && python -m knai demo' in head
    assert "<!-- test-command -->" in head
    assert RELATIVE_LINK.search(readme) is not None  # so the test above has something to catch


def test_python_versions_are_classified_from_3_10_to_3_13(dist: Path) -> None:
    metadata = wheel_metadata(dist)
    classifiers = metadata.get_all("Classifier") or []
    versions = [c.rsplit(":: ", 1)[1] for c in classifiers if re.search(r":: 3\.\d+$", c)]
    assert versions == ["3.10", "3.11", "3.12", "3.13"]
    assert metadata["Requires-Python"] == ">=3.10"


def test_the_wheel_registers_the_command_and_the_pytest_plugin(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(name).decode()
        assert "knai/py.typed" in archive.namelist()
    assert "knai = knai._cli:main" in entry_points
    assert "knai = knai.testing.pytest_plugin" in entry_points


def _benchmark_runner() -> object:
    folder = ROOT / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("knai_benchmarks_run", folder / "run.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(folder))


def test_a_quick_benchmark_run_leaves_the_tracked_results_alone(tmp_path: Path) -> None:
    run = _benchmark_runner()
    output_dir = run.output_dir  # type: ignore[attr-defined]
    tracked = ROOT / "benchmarks"
    assert output_dir(quick=False) == tracked
    assert output_dir(quick=True) == tracked / "quick"
    assert output_dir(quick=True, out=tmp_path) == tmp_path
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "benchmarks/quick/RESULTS.md"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "benchmarks/quick/ must be ignored by git"
