"""``python -m examples.paid_chat``: the paid chat service on http://127.0.0.1:8000.

Configured from the environment (the README's "Serving a paid endpoint" lists
the variables). Left unset, KNAI_BASE_URL brings up an embedded sandbox wallet
with the user ``alice`` (API key ``sk-paid-chat-alice``, an active session),
and UPSTREAM_BASE_URL a loopback FakeLLM, so the one command runs as is.
"""

import contextlib
import os

import uvicorn

from .app import app_from_env


def main() -> None:
    """Serve until Ctrl-C."""
    with contextlib.ExitStack() as stack:
        if not os.environ.get("KNAI_BASE_URL"):
            from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, serve

            wallet = stack.enter_context(serve())
            wallet.admin.create_user(DEMO_PROVIDER_SLUG, "alice", balance=100_000)
            wallet.admin.open_session(DEMO_PROVIDER_SLUG, "alice")
            os.environ.update(
                KNAI_BASE_URL=wallet.url,
                KNAI_API_KEY=DEMO_API_KEY,
                KNAI_PROVIDER_SLUG=DEMO_PROVIDER_SLUG,
            )
            os.environ.setdefault("PAID_CHAT_KEYS", "sk-paid-chat-alice=alice")
            print(f"sandbox wallet at {wallet.url}: alice has 100000 tokens")  # noqa: T201
        if not os.environ.get("UPSTREAM_BASE_URL"):
            from knai.testing import FakeLLM

            fake = stack.enter_context(FakeLLM().serve())
            os.environ["UPSTREAM_BASE_URL"] = fake.base_url
            print(f"fake LLM upstream at {fake.base_url}")  # noqa: T201
        port = int(os.environ.get("PORT", "8000"))
        print(f"paid chat at http://127.0.0.1:{port}/v1 (Ctrl-C stops)")  # noqa: T201
        uvicorn.run(app_from_env(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
