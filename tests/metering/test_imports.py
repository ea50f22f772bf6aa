"""`import knai` stays free of metering, and metering of any LLM SDK."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import knai.metering

SRC = Path(knai.metering.__file__).resolve().parent.parent


def modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


def test_import_knai_does_not_load_metering() -> None:
    assert "knai.metering" not in modules_after("import knai")


def test_metering_loads_no_llm_sdk() -> None:
    loaded = modules_after("import knai.metering")
    assert "knai.metering" in loaded
    assert not {name for name in loaded if name.partition(".")[0] in {"openai", "anthropic"}}


def test_no_module_under_src_names_an_llm_sdk_or_knais_private_parts_in_metering() -> None:
    """Duck typing only, and only the client's public API."""
    for path in (SRC / "metering").glob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")):
                assert "openai" not in stripped, path
                assert "anthropic" not in stripped, path
                assert not stripped.startswith(("from knai._", "import knai._")), path


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(knai.metering.__all__) == [
        "AsyncMeter",
        "AsyncMeteredStream",
        "Meter",
        "MeteredStream",
        "Price",
        "PriceTable",
        "Rate",
        "UnsettledCharge",
        "Usage",
        "usage_of",
    ]
    for name in knai.metering.__all__:
        assert getattr(knai.metering, name).__doc__, name
