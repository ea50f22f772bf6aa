"""Packages the benchmarks need but the project does not: installed on first use.

Each group goes into its own folder under ``benchmarks/.vendor/`` with
``pip install --target`` (the folder is gitignored), so the project's venv is
never touched:

- ``knai010/``: ``knai-provider==0.1.0`` and ``requests``. 0.1.0's package is
  also called ``knai``, so it is loaded from that folder as ``knai_010``;
- ``matplotlib/``: for the PNG chart, only when not importable already;
- ``pyinstrument/``: for ``profile_charge.py``, likewise.

A group whose install fails is reported and skipped when it is optional.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

VENDOR = Path(__file__).resolve().parent / ".vendor"
_DONE = ".installed"

GROUPS: dict[str, list[str]] = {
    "knai010": ["knai-provider==0.1.0", "requests"],
    "matplotlib": ["matplotlib"],
    "pyinstrument": ["pyinstrument"],
}


def ensure(group: str, *, quiet: bool = True) -> Path | None:
    """Install a group into its folder once; put the folder at the END of sys.path.

    Appending keeps the project's own packages (and the editable ``knai``) first.
    Returns the folder, or None when pip failed.
    """
    target = VENDOR / group
    if not (target / _DONE).exists():
        print(f"[setup] pip install --target {target} {' '.join(GROUPS[group])}", flush=True)
        command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
        command += ["--upgrade", "--target", str(target), *GROUPS[group]]
        if quiet:
            command.append("--quiet")
        result = subprocess.run(command, check=False, timeout=900)
        if result.returncode != 0:
            print(f"[setup] installing {group} failed (pip exit {result.returncode})")
            return None
        (target / _DONE).write_text(" ".join(GROUPS[group]) + "\n")
    if str(target) not in sys.path:
        sys.path.append(str(target))
        importlib.invalidate_caches()
    return target


def load_knai_010() -> ModuleType:
    """knai-provider 0.1.0, imported as ``knai_010`` beside the project's ``knai``."""
    if "knai_010" in sys.modules:
        return sys.modules["knai_010"]
    target = ensure("knai010")
    if target is None:
        raise RuntimeError("knai-provider==0.1.0 could not be installed into benchmarks/.vendor")
    package = target / "knai"
    spec = importlib.util.spec_from_file_location(
        "knai_010", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["knai_010"] = module
    spec.loader.exec_module(module)  # its `from .client import ...` resolves in knai_010
    assert module.__version__ == "0.1.0", module.__version__
    return module


def optional(module: str, group: str) -> ModuleType | None:
    """Import `module`, installing its group into the vendor folder if needed; else None."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pass
    if ensure(group) is None:
        return None
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        print(f"[setup] {module} is not importable after install: {exc}")
        return None
