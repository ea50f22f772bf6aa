"""The sandbox wallet: a faithful local KNAI Wallet for tests and demos.

It speaks the provider protocol (session status, charge) like the real service,
keeps wallets in memory, and adds a ``/_sandbox/`` admin API to set up users and
sessions and to script failures (error statuses, delays, dropped connections)::

    from knai.testing import Sandbox

    with Sandbox() as sb:                                   # in process, no socket
        sb.admin.create_user("demo-provider", "alice", balance=5_000)
        with sb.serve() as running:                         # or over loopback
            print(running.url)

Requires the ``sandbox`` extra (starlette, uvicorn). Importing this package is
cheap: each name loads its module on first access, so the pytest plugin and
``import knai`` never pull in starlette.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._admin import SandboxAdmin, SandboxAdminError
    from ._app import create_app
    from ._fake_llm import FakeLLM, FakeLLMRequest, RunningFakeLLM
    from ._faults import DropWhen, Endpoint, Fault, PendingFault, SandboxStats
    from ._ledger import (
        DEMO_API_KEY,
        DEMO_BALANCE,
        DEMO_PROVIDER_SLUG,
        DEMO_USERNAME,
        Charge,
        ConflictError,
        Ledger,
        LedgerError,
        NotFoundError,
        Reply,
        SessionInfo,
        SessionState,
    )
    from ._sandbox import Sandbox
    from ._server import RunningSandbox, run_forever, serve
    from ._transport import AsyncSandboxTransport, SandboxTransport

__all__ = [
    "DEMO_API_KEY",
    "DEMO_BALANCE",
    "DEMO_PROVIDER_SLUG",
    "DEMO_USERNAME",
    "AsyncSandboxTransport",
    "Charge",
    "ConflictError",
    "DropWhen",
    "Endpoint",
    "FakeLLM",
    "FakeLLMRequest",
    "Fault",
    "Ledger",
    "LedgerError",
    "NotFoundError",
    "PendingFault",
    "Reply",
    "RunningFakeLLM",
    "RunningSandbox",
    "Sandbox",
    "SandboxAdmin",
    "SandboxAdminError",
    "SandboxStats",
    "SandboxTransport",
    "SessionInfo",
    "SessionState",
    "create_app",
    "run_forever",
    "serve",
]

_MODULE_OF: dict[str, str] = {
    **dict.fromkeys(["SandboxAdmin", "SandboxAdminError"], "._admin"),
    "create_app": "._app",
    **dict.fromkeys(["FakeLLM", "FakeLLMRequest", "RunningFakeLLM"], "._fake_llm"),
    **dict.fromkeys(["DropWhen", "Endpoint", "Fault", "PendingFault", "SandboxStats"], "._faults"),
    **dict.fromkeys(
        [
            "DEMO_API_KEY",
            "DEMO_BALANCE",
            "DEMO_PROVIDER_SLUG",
            "DEMO_USERNAME",
            "Charge",
            "ConflictError",
            "Ledger",
            "LedgerError",
            "NotFoundError",
            "Reply",
            "SessionInfo",
            "SessionState",
        ],
        "._ledger",
    ),
    "Sandbox": "._sandbox",
    **dict.fromkeys(["RunningSandbox", "run_forever", "serve"], "._server"),
    **dict.fromkeys(["AsyncSandboxTransport", "SandboxTransport"], "._transport"),
}


# Defined only at run time: to a type checker, this package has exactly the
# names imported above, so a misspelt `from knai.testing import Sandbx` is an error.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(module, __name__), name)
        except ModuleNotFoundError as exc:
            from ._extra import missing_extra

            clearer = missing_extra(f"{__name__}.{name}", exc)
            if clearer is None:
                raise
            raise clearer from exc
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(__all__)
