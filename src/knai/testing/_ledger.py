"""The sandbox wallet's memory: providers, wallets, sessions, charges, idempotency.

One ``threading.Lock`` guards everything and every public method holds it for
its whole body, so each mutation is atomic whether callers are threads, asyncio
tasks on several loops, or both. A charge in particular is one step: look up the
idempotency record, check the session, check and debit the balance, record the
reply. A charge larger than the balance changes nothing, so a balance never goes
negative.

Session state is derived from the clock when read (``time.monotonic`` unless a
test passes its own clock): a session opened with ``activate_after=a, ttl=t`` is
``pending`` for ``a`` seconds, ``active`` for ``t`` more, then ``expired``;
``expire_session`` / ``revoke_session`` end it early. Timestamps are reported as
ISO-8601 UTC strings (``2026-01-02T03:04:05.678Z``) on a wall clock anchored to
that same clock.

Idempotency: replies to a charge carrying an ``Idempotency-Key`` are recorded
per (provider slug, key) with a SHA-256 fingerprint of the session token and the
JSON body. Only *decided* charges are recorded: 200 (debited) and 402 (refused
for balance). Answers given before the wallet was consulted (401, 403, 410, and
the app's 400/422) are not, so fixing the request and retrying with the same key
works. Replaying a recorded key with the same request returns the recorded reply
byte for byte (same ``charge_id``, no second debit); with another token or body
it is refused with 409.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, Literal

from ._faults import FaultPlan
from ._idempotency import (
    IDEMPOTENCY_CONFLICT,
    RECORDED_STATUSES,
    IdempotencyRecord,
    fingerprint,
    secret_digest,
    utf8,
)
from ._ledger_checks import check_int, check_seconds, check_text
from ._ledger_records import (
    DEMO_API_KEY,
    DEMO_BALANCE,
    DEMO_PROVIDER_SLUG,
    DEMO_USERNAME,
    Charge,
    ConflictError,
    LedgerError,
    NotFoundError,
    Reply,
    SessionInfo,
    SessionState,
    iso_utc,
)

# The records stay importable from here, where knai.testing's lazy names point.
__all__ = [
    "DEMO_API_KEY",
    "DEMO_BALANCE",
    "DEMO_PROVIDER_SLUG",
    "DEMO_USERNAME",
    "IDEMPOTENCY_CONFLICT",
    "Charge",
    "ConflictError",
    "Ledger",
    "LedgerError",
    "NotFoundError",
    "Reply",
    "SessionInfo",
    "SessionState",
    "iso_utc",
]

# Compared against when the slug is unknown, so both paths do the same work.
_NO_KEY = secrets.token_bytes(32)


@dataclass
class _Session:
    session_id: str
    token: str = field(repr=False)
    slug: str
    username: str
    created: float  # clock time
    activates: float  # clock time
    expires: float  # clock time
    ended: Literal["expired", "revoked"] | None = None
    ended_at: float | None = None

    def state(self, now: float) -> SessionState:
        if self.ended is not None:
            return self.ended
        if now >= self.expires:
            return "expired"
        return "pending" if now < self.activates else "active"


@dataclass
class _Wallet:
    balance: int
    charges: list[Charge] = field(default_factory=list[Charge])
    sessions: list[_Session] = field(default_factory=list[_Session])


@dataclass
class _Provider:
    api_key: bytes = field(repr=False)
    wallets: dict[str, _Wallet] = field(default_factory=dict[str, _Wallet])


class Ledger:
    """Thread-safe in-memory state of a sandbox wallet.

    ``Ledger(demo=True)`` starts with the demo provider (``DEMO_PROVIDER_SLUG`` /
    ``DEMO_API_KEY``) and a ``DEMO_USERNAME`` wallet of ``DEMO_BALANCE`` tokens;
    ``reset()`` returns to that starting point. ``faults`` holds the fault plan
    the HTTP app consults, so every app over one ledger shares it.
    """

    def __init__(self, *, demo: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._clock_origin = clock()
        self._wall_origin = datetime.now(timezone.utc)
        self._demo = demo
        self._providers: dict[str, _Provider] = {}
        self._sessions_by_id: dict[str, _Session] = {}
        self._sessions_by_token: dict[bytes, _Session] = {}
        self._idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
        self.faults: FaultPlan = FaultPlan()
        self.reset()

    # -- administration -------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (faults and counters too), then re-seed the demo if any."""
        with self._lock:
            self._providers.clear()
            self._sessions_by_id.clear()
            self._sessions_by_token.clear()
            self._idempotency.clear()
            if self._demo:
                self._providers[DEMO_PROVIDER_SLUG] = _Provider(
                    DEMO_API_KEY.encode(), {DEMO_USERNAME: _Wallet(DEMO_BALANCE)}
                )
        self.faults.reset()

    def add_provider(self, slug: str, api_key: str) -> None:
        """Register a provider. Raises ``ConflictError`` if the slug is taken."""
        check_text("slug", slug)
        check_text("api_key", api_key)
        if not api_key.isascii() or not api_key.isprintable():
            raise ValueError("api_key must be printable ASCII (it travels in a header)")
        with self._lock:
            if slug in self._providers:
                raise ConflictError(f"provider {slug!r} already exists")
            self._providers[slug] = _Provider(api_key.encode())

    def add_user(self, slug: str, provider_username: str, balance: int = 0) -> int:
        """Open a wallet for ``provider_username``; returns its balance."""
        check_text("provider_username", provider_username)
        check_int("balance", balance, minimum=0)
        with self._lock:
            provider = self._provider(slug)
            if provider_username in provider.wallets:
                raise ConflictError(f"user {provider_username!r} already exists")
            provider.wallets[provider_username] = _Wallet(balance)
            return balance

    def top_up(self, slug: str, provider_username: str, amount_tokens: int) -> int:
        """Credit a wallet; returns the new balance."""
        check_int("amount_tokens", amount_tokens, minimum=1)
        with self._lock:
            wallet = self._wallet(slug, provider_username)
            wallet.balance += amount_tokens
            return wallet.balance

    def balance(self, slug: str, provider_username: str) -> int:
        """The wallet balance, in tokens, of `provider_username` with provider `slug`."""
        with self._lock:
            return self._wallet(slug, provider_username).balance

    def charges(self, slug: str, provider_username: str) -> list[Charge]:
        """Applied charges of one wallet, oldest first."""
        with self._lock:
            return list(self._wallet(slug, provider_username).charges)

    def open_session(
        self,
        slug: str,
        provider_username: str,
        *,
        activate_after: float = 0.0,
        ttl: float = 3600.0,
    ) -> SessionInfo:
        """Open a session: ``pending`` for ``activate_after`` s, then ``active`` for ``ttl`` s."""
        check_seconds("activate_after", activate_after, allow_zero=True)
        check_seconds("ttl", ttl, allow_zero=False)
        with self._lock:
            wallet = self._wallet(slug, provider_username)
            now = self._clock()
            session = _Session(
                session_id=f"ses_{secrets.token_hex(12)}",
                token=secrets.token_urlsafe(32),
                slug=slug,
                username=provider_username,
                created=now,
                activates=now + activate_after,
                expires=now + activate_after + ttl,
            )
            wallet.sessions.append(session)
            self._sessions_by_id[session.session_id] = session
            self._sessions_by_token[secret_digest(session.token)] = session
            return self._info(session, now)

    def expire_session(self, session_id: str) -> SessionInfo:
        """End a session as if its time ran out (a revoked one stays revoked)."""
        return self._end(session_id, "expired")

    def revoke_session(self, session_id: str) -> SessionInfo:
        """End a session as revoked by its user."""
        return self._end(session_id, "revoked")

    # -- the wire protocol ----------------------------------------------------

    def authenticate(self, slug: str, api_key: str) -> bool:
        """True when ``api_key`` is the key of provider ``slug`` (constant-time compare)."""
        with self._lock:
            provider = self._providers.get(slug)
        expected = provider.api_key if provider is not None else _NO_KEY
        matches = secrets.compare_digest(expected, utf8(api_key))
        return matches and provider is not None

    def session_status(self, slug: str, provider_username: str) -> SessionInfo | None:
        """The session the status endpoint reports: the newest active one, else the newest.

        ``None`` when the user (or provider) has no session at all.
        """
        with self._lock:
            provider = self._providers.get(slug)
            wallet = provider.wallets.get(provider_username) if provider is not None else None
            if wallet is None or not wallet.sessions:
                return None
            now = self._clock()
            active = [s for s in wallet.sessions if s.state(now) == "active"]
            return self._info(active[-1] if active else wallet.sessions[-1], now)

    def authorize_charge(
        self,
        slug: str,
        session_token: str,
        amount_tokens: int,
        model: str,
        *,
        idempotency_key: str | None = None,
        request_body: Mapping[str, Any] | None = None,
    ) -> Reply:
        """Decide one charge atomically and return the wire reply.

        ``request_body`` is the JSON object the client sent; it (with the token)
        is what an idempotency key is bound to. It defaults to the two fields.
        """
        check_int("amount_tokens", amount_tokens, minimum=1)
        check_text("model", model)
        if request_body is None:
            request_body = {"amount_tokens": amount_tokens, "model": model}
        bound = fingerprint(session_token, request_body)
        with self._lock:
            if idempotency_key is not None:
                record = self._idempotency.get((slug, idempotency_key))
                if record is not None:
                    if secrets.compare_digest(record.fingerprint, bound):
                        return replace(record.reply, replayed=True)
                    return _error(409, IDEMPOTENCY_CONFLICT)
            reply = self._decide(slug, session_token, amount_tokens, model, idempotency_key)
            if idempotency_key is not None and reply.status in RECORDED_STATUSES:
                self._idempotency[(slug, idempotency_key)] = IdempotencyRecord(bound, reply)
            return reply

    # -- internals (lock held) ------------------------------------------------

    def _decide(
        self, slug: str, token: str, amount: int, model: str, idempotency_key: str | None
    ) -> Reply:
        provider = self._providers.get(slug)
        if provider is None:
            return _error(401, "Invalid API key")
        session = self._sessions_by_token.get(secret_digest(token))
        if (
            session is None
            or session.slug != slug
            or not secrets.compare_digest(utf8(session.token), utf8(token))
        ):
            return _error(403, "Invalid session token")
        now = self._clock()
        state = session.state(now)
        if state == "revoked":
            return _error(403, "Session revoked")
        if state == "expired":
            return _error(410, "Session has expired")
        if state == "pending":
            return _error(403, "Session is not active yet")
        wallet = provider.wallets[session.username]
        if amount > wallet.balance:
            return Reply(
                402,
                MappingProxyType(
                    {"error": "Insufficient wallet balance", "balance": wallet.balance}
                ),
            )
        wallet.balance -= amount
        charge = Charge(
            charge_id=f"ch_{secrets.token_hex(12)}",
            provider_username=session.username,
            amount_tokens=amount,
            model=model,
            created_at=iso_utc(self._wall(now)),
            idempotency_key=idempotency_key,
        )
        wallet.charges.append(charge)
        return Reply(
            200,
            MappingProxyType(
                {
                    "charge_id": charge.charge_id,
                    "status": "succeeded",
                    "amount_tokens": amount,
                    "model": model,
                    "remaining_balance": wallet.balance,
                    "provider_username": session.username,
                    "created_at": charge.created_at,
                }
            ),
        )

    def _end(self, session_id: str, how: Literal["expired", "revoked"]) -> SessionInfo:
        with self._lock:
            session = self._sessions_by_id.get(session_id)
            if session is None:
                raise NotFoundError(f"unknown session {session_id!r}")
            now = self._clock()
            state = session.state(now)
            if state != "revoked" and not (state == "expired" and how == "expired"):
                if session.ended_at is None:
                    session.ended_at = min(now, session.expires)
                session.ended = how
            return self._info(session, now)

    def _provider(self, slug: str) -> _Provider:
        provider = self._providers.get(slug)
        if provider is None:
            raise NotFoundError(f"unknown provider {slug!r}")
        return provider

    def _wallet(self, slug: str, provider_username: str) -> _Wallet:
        wallet = self._provider(slug).wallets.get(provider_username)
        if wallet is None:
            raise NotFoundError(f"unknown user {provider_username!r} of provider {slug!r}")
        return wallet

    def _wall(self, clock_time: float) -> datetime:
        return self._wall_origin + timedelta(seconds=clock_time - self._clock_origin)

    def _info(self, session: _Session, now: float) -> SessionInfo:
        ends = session.ended_at if session.ended_at is not None else session.expires
        return SessionInfo(
            session_id=session.session_id,
            provider_username=session.username,
            status=session.state(now),
            created_at=iso_utc(self._wall(session.created)),
            activates_at=iso_utc(self._wall(session.activates)),
            expires_at=iso_utc(self._wall(ends)),
            session_token=session.token,
        )


def _error(status: int, message: str) -> Reply:
    return Reply(status, MappingProxyType({"error": message}))
