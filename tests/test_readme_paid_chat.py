"""The README's FastAPI example is examples/paid_chat/app.py, to the character."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_fastapi_block_is_the_example_service() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### With FastAPI\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks == [(ROOT / "examples" / "paid_chat" / "app.py").read_text()]
