"""The async client works without the optional `speedups` extra (sniffio absent)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Runs in a fresh interpreter where `import sniffio` fails, as on a plain
# `pip install knai-provider[sandbox]`; the dev extra installs sniffio.
_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    sys.modules["sniffio"] = None  # import sniffio -> ImportError

    from knai import AsyncKNAIProvider
    from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, serve

    async def main(url: str, token: str) -> int:
        async with AsyncKNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, url) as provider:
            session = await provider.get_session("alice")
            result = await provider.charge(token, 5, "gpt-4")
            return int(result["amount_tokens"]) + (0 if session else 1)

    with serve() as running:
        running.admin.create_user(DEMO_PROVIDER_SLUG, "alice", balance=100)
        opened = running.admin.open_session(DEMO_PROVIDER_SLUG, "alice")
        print(asyncio.run(main(running.url, opened.session_token)))
        print(running.admin.balance(DEMO_PROVIDER_SLUG, "alice"))
    """
)


def test_async_charge_without_sniffio_succeeds_and_debits_once() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5", "95"]
