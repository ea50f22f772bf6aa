"""The README's outbox example runs as written, against the sandbox instead of production."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from knai.testing import DEMO_API_KEY, RunningSandbox
from tests.outbox.conftest import SLUG, USER

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_charging_when_the_wallet_is_down_example_charges_once(
    knai_sandbox_server: RunningSandbox, token: str, tmp_path: Path
) -> None:
    section = README.read_text().split("## Charging when the wallet is down\n", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.DOTALL)[0]
    code = code.replace('provider_api_key="sk_..."', f"provider_api_key={DEMO_API_KEY!r}")
    code = code.replace('provider_slug="acme"', f"provider_slug={SLUG!r}, base_url=url")
    code = code.replace("/var/lib/acme/charges.db", str(tmp_path / "charges.db"))
    namespace: dict[str, Any] = {"url": knai_sandbox_server.url}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    entry = namespace["charge_durably"](token, "req-readme")
    assert entry.state == "pending"
    charges = knai_sandbox_server.admin.charges(SLUG, USER)
    assert [(c.idempotency_key, c.amount_tokens) for c in charges] == [("req-readme", 1500)]


def test_the_meter_over_an_outbox_example_stores_then_charges_once(
    knai_sandbox_server: RunningSandbox, token: str, tmp_path: Path
) -> None:
    section = README.read_text().split("## Charging when the wallet is down\n", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.DOTALL)[1]
    assert "Meter(provider, outbox=outbox)" in code
    code = code.replace('provider_api_key="sk_..."', f"provider_api_key={DEMO_API_KEY!r}")
    code = code.replace('provider_slug="acme"', f"provider_slug={SLUG!r}, base_url=url")
    code = code.replace("/var/lib/acme/charges.db", str(tmp_path / "charges.db"))
    completion = {"model": "gpt-4o", "usage": {"prompt_tokens": 30, "completion_tokens": 12}}
    namespace = {
        "token": token,
        "completion": completion,
        "request_id": "req-meter",
        "url": knai_sandbox_server.url,
    }
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["stored"].state == "pending"  # type: ignore[attr-defined]
    charges = knai_sandbox_server.admin.charges(SLUG, USER)
    assert [(c.idempotency_key, c.amount_tokens) for c in charges] == [("req-meter", 42)]
