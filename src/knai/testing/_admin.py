"""``SandboxAdmin``: a typed client of the sandbox's ``/_sandbox/`` admin API.

The same handle drives a sandbox in this process (give it a transport) or one
served elsewhere (give it the URL)::

    admin = SandboxAdmin("http://127.0.0.1:8750")
    admin.create_user("demo-provider", "alice", balance=5_000)
    session = admin.open_session("demo-provider", "alice")
    admin.inject_fault("charge", status=503, retry_after=1, times=2)

Every method raises ``SandboxAdminError`` when the sandbox refuses (unknown
user, duplicate provider, invalid field), and httpx errors when it cannot be reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, cast

import httpx

from .._args import check_url
from ._faults import DropWhen, Endpoint, Fault, PendingFault, SandboxStats
from ._ledger import Charge, SessionInfo, SessionState

__all__ = ["SandboxAdmin", "SandboxAdminError"]


class SandboxAdminError(Exception):
    """The sandbox refused an admin call; ``status_code`` and ``message`` say why."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status_code})")
        self.status_code = status_code
        self.message = message


class SandboxAdmin:
    """Set up and inspect a sandbox wallet. Close it (or use ``with``) when done.

    Raises:
        ValueError: `base_url` is not an http(s) URL httpx would take (surrounding
            whitespace is stripped), or carries credentials, a query or a fragment.
    """

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        # The SDK's own check, so a bad URL is a ValueError here, not an httpx error per call;
        # plain http may go anywhere (a sandbox in a container), as the admin API holds no secret.
        url = check_url(base_url, "base_url", http_anywhere=True)
        self._client = httpx.Client(
            base_url=url.rstrip("/"), transport=transport, timeout=timeout, trust_env=False
        )

    def close(self) -> None:
        """Close the admin HTTP client."""
        self._client.close()

    def __enter__(self) -> SandboxAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- wallets --------------------------------------------------------------

    def reset(self) -> None:
        """Return the sandbox to its starting state (faults and counters included)."""
        self._call("POST", "/reset")

    def create_provider(self, slug: str, api_key: str) -> None:
        """Register a provider `slug` that authenticates with `api_key`."""
        self._call("POST", "/providers", json={"slug": slug, "api_key": api_key})

    def create_user(self, slug: str, provider_username: str, *, balance: int = 0) -> int:
        """Open a wallet; returns its balance."""
        body = {"slug": slug, "provider_username": provider_username, "balance": balance}
        return int(self._call("POST", "/users", json=body)["balance"])

    def top_up(self, slug: str, provider_username: str, amount_tokens: int) -> int:
        """Credit a wallet; returns the new balance."""
        body = {
            "slug": slug,
            "provider_username": provider_username,
            "amount_tokens": amount_tokens,
        }
        return int(self._call("POST", "/top-up", json=body)["balance"])

    def balance(self, slug: str, provider_username: str) -> int:
        """The wallet balance, in tokens, of `provider_username` with provider `slug`."""
        return int(self._wallet(slug, provider_username)["balance"])

    def charges(self, slug: str, provider_username: str) -> list[Charge]:
        """Applied charges, oldest first."""
        return [Charge(**c) for c in self._wallet(slug, provider_username)["charges"]]

    # -- sessions -------------------------------------------------------------

    def open_session(
        self,
        slug: str,
        provider_username: str,
        *,
        activate_after: float = 0.0,
        ttl: float = 3600.0,
    ) -> SessionInfo:
        """Open a session, ``pending`` for ``activate_after`` s then ``active`` for ``ttl`` s."""
        body = {
            "slug": slug,
            "provider_username": provider_username,
            "activate_after": activate_after,
            "ttl": ttl,
        }
        return _session(self._call("POST", "/sessions", json=body))

    def expire_session(self, session_id: str) -> SessionInfo:
        """End a session as expired; the returned info has an empty ``session_token``."""
        return _session(self._call("POST", f"/sessions/{session_id}/expire"))

    def revoke_session(self, session_id: str) -> SessionInfo:
        """End a session as revoked; the returned info has an empty ``session_token``."""
        return _session(self._call("POST", f"/sessions/{session_id}/revoke"))

    # -- faults ---------------------------------------------------------------

    def inject_fault(
        self,
        endpoint: Endpoint,
        *,
        status: int | None = None,
        retry_after: float | str | None = None,
        body: Mapping[str, Any] | str | None = None,
        delay: float | None = None,
        drop: DropWhen | None = None,
        times: int = 1,
    ) -> PendingFault:
        """Make the next ``times`` requests to ``endpoint`` ("status" or "charge") fail.

        ``status`` (with optional ``Retry-After`` and body) answers at once;
        ``delay`` seconds pass first, then the request is answered as usual or
        as the fault says; ``drop`` cuts the connection "before" the charge is
        applied or "after". Queued behind earlier faults of that endpoint.
        """
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        payload = {
            "endpoint": endpoint,
            "status": status,
            "retry_after": None if retry_after is None else str(retry_after),
            "body": body,
            "delay": delay or 0.0,
            "drop": drop,
            "times": times,
        }
        return _pending(self._call("POST", "/faults", json=payload))

    def faults(self) -> list[PendingFault]:
        """Faults still queued, in firing order per endpoint."""
        return [_pending(f) for f in self._call("GET", "/faults")["faults"]]

    def clear_faults(self, endpoint: Endpoint | None = None) -> int:
        """Drop queued faults (all, or one endpoint's); returns how many entries went."""
        params = {"endpoint": endpoint} if endpoint is not None else None
        return int(self._call("DELETE", "/faults", params=params)["cleared"])

    def stats(self) -> SandboxStats:
        """Requests seen and faults fired per endpoint since the last reset."""
        body = self._call("GET", "/stats")
        return SandboxStats(requests=body["requests"], faults_fired=body["faults_fired"])

    # -- plumbing -------------------------------------------------------------

    def _wallet(self, slug: str, provider_username: str) -> dict[str, Any]:
        return self._call(
            "GET", "/wallet", params={"slug": slug, "provider_username": provider_username}
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        response = self._client.request(method, f"/_sandbox{path}", json=json, params=params)
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text}
        if response.is_error:
            message: object = (
                cast("dict[str, object]", body).get("error") if isinstance(body, dict) else None
            )
            raise SandboxAdminError(response.status_code, str(message or response.reason_phrase))
        return cast("dict[str, Any]", body)


def _session(body: Mapping[str, Any]) -> SessionInfo:
    return SessionInfo(
        session_id=body["session_id"],
        provider_username=body["provider_username"],
        status=cast("SessionState", body["status"]),
        created_at=body["created_at"],
        activates_at=body["activates_at"],
        expires_at=body["expires_at"],
        session_token=body.get("session_token", ""),
    )


def _pending(body: Mapping[str, Any]) -> PendingFault:
    fault = Fault(
        status=body["status"],
        retry_after=body["retry_after"],
        body=body["body"],
        delay=body["delay"],
        drop=body["drop"],
    )
    return PendingFault(endpoint=body["endpoint"], remaining=body["remaining"], fault=fault)
