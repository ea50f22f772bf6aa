"""The README's metering examples are the code mypy checks in tests/typing/metering_usage.py."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_every_line_of_the_readme_examples_is_in_the_type_checked_mirror() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Charging LLM usage", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    mirror = {
        line.strip() for line in (ROOT / "tests/typing/metering_usage.py").read_text().splitlines()
    }
    missing = [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip()
        and line.strip() not in mirror
        # The mirror imports for both examples at once.
        and not line.startswith(("import ", "from "))
    ]
    assert missing == []
