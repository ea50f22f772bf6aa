"""``Sandbox``: one ledger, its app, and every way to reach it.

The in-process transports, the admin handle and ``serve()`` all act on one
wallet::

    with Sandbox() as sb:  # the demo provider is already there
        client = httpx.Client(base_url=sb.url, transport=sb.transport())
        sb.admin.inject_fault("charge", drop="after")
        with sb.serve() as running:  # the same wallet on a real socket
            ...
"""

from __future__ import annotations

import contextlib
from types import TracebackType

from starlette.applications import Starlette

from ._admin import SandboxAdmin
from ._app import create_app
from ._ledger import Ledger
from ._server import RunningSandbox, serve
from ._transport import AsyncSandboxTransport, SandboxTransport

__all__ = ["Sandbox"]


class Sandbox:
    """A sandbox wallet in this process.

    ``Sandbox()`` owns a demo ledger (``DEMO_PROVIDER_SLUG`` / ``DEMO_API_KEY``,
    wallet ``DEMO_USERNAME``); pass a ``Ledger`` to start from another. The
    in-process transports and ``serve()`` all act on that one ledger, faults
    included. ``close()`` (or leaving ``with``) closes ``admin``; each
    transport is closed by the httpx client it was given to.
    """

    url = "http://knai-sandbox.localhost"
    """Base URL to pair with ``transport()`` / ``async_transport()`` (any URL works)."""

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger: Ledger = ledger if ledger is not None else Ledger(demo=True)
        self.app: Starlette = create_app(self.ledger)
        self._admin: SandboxAdmin | None = None

    def transport(self) -> SandboxTransport:
        """A new sync in-process transport for ``httpx.Client(transport=...)``."""
        return SandboxTransport(self.app)

    def async_transport(self) -> AsyncSandboxTransport:
        """A new async in-process transport for ``httpx.AsyncClient(transport=...)``."""
        return AsyncSandboxTransport(self.app)

    @property
    def admin(self) -> SandboxAdmin:
        """An admin handle over an in-process transport (created on first use)."""
        if self._admin is None:
            self._admin = SandboxAdmin(self.url, transport=self.transport())
        return self._admin

    def serve(
        self, *, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False
    ) -> contextlib.AbstractContextManager[RunningSandbox]:
        """Serve this sandbox on a loopback socket for a ``with`` block (see ``serve``)."""
        return serve(self.ledger, host=host, port=port, allow_remote=allow_remote)

    def close(self) -> None:
        """Close `admin`, if it was created; the ledger and app stay usable."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
