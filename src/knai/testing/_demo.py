"""`knai demo`: the published README flow, run against a sandbox wallet.

From a source checkout it tells an end user's story through the paid chat
example (`_demo_story`). Installed without one, it starts an embedded sandbox
on a loopback port (or uses `--base-url`),
creates a wallet, lets its session become active after a short delay, and
walks through waiting, charging, an insufficient balance, a charge retried
under an injected dropped connection (applied exactly once), and an expired
session. Every step prints what a provider would see; the exit code is 0 only
if the wallet's ledger agrees with what the SDK reported.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Generator

import httpx

from .. import InsufficientBalanceError, KNAIProvider, SessionExpiredError
from ._admin import SandboxAdmin, SandboxAdminError
from ._ledger import DEMO_API_KEY, DEMO_PROVIDER_SLUG

_START_BALANCE = 5_000
_ACTIVATE_AFTER = 1.0


def _step(number: int, text: str) -> None:
    print(f"\n[{number}] {text}")


def _say(text: str) -> None:
    print(f"    {text}")


class NoSandboxError(Exception):
    """``--base-url`` does not lead to a sandbox wallet; the message says what answered."""


def _probe(admin: SandboxAdmin, url: str) -> None:
    """Make sure `url` is a sandbox before the demo starts; raise NoSandboxError if not."""
    hint = "pass the URL `knai sandbox` prints (no path after the port)"
    try:
        stats = admin.stats()
    except httpx.TimeoutException:
        raise NoSandboxError(f"no answer from {url} in time; {hint}") from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise NoSandboxError(
            f"cannot reach {url} ({reason}): start one with `knai sandbox`, or {hint}"
        ) from None
    except SandboxAdminError as exc:
        raise NoSandboxError(
            f"{url} is not a knai sandbox (GET /_sandbox/stats answered HTTP"
            f" {exc.status_code}); {hint}"
        ) from None
    except (KeyError, TypeError, ValueError, AttributeError):
        stats = None
    if stats is None:
        raise NoSandboxError(
            f"{url} is not a knai sandbox (GET /_sandbox/stats is not the sandbox's answer); {hint}"
        )


@contextlib.contextmanager
def _wallet(base_url: str | None) -> Generator[tuple[str, SandboxAdmin], None, None]:
    if base_url is not None:
        url = base_url.rstrip("/")
        with SandboxAdmin(url, timeout=5.0) as admin:
            _probe(admin, url)
            yield url, admin
        return
    from ._server import serve

    with serve() as running:
        yield running.url, running.admin


def run_demo(base_url: str | None = None) -> int:
    """Run the demo; returns 0 when every step behaved as documented."""
    with _wallet(base_url) as (url, admin):
        where = "embedded sandbox" if base_url is None else "sandbox"
        print(f"knai demo: {where} wallet at {url}")
        from ._demo_story import example_builder, tell

        build_app = example_builder()
        if build_app is not None:
            return tell(url, admin, build_app)
        print("(no paid chat service here: it needs a source checkout and the sandbox extra;")
        print(" the wallet steps as a provider sees them)")
        user = f"demo-{secrets.token_hex(3)}"
        admin.create_user(DEMO_PROVIDER_SLUG, user, balance=_START_BALANCE)
        opened = admin.open_session(DEMO_PROVIDER_SLUG, user, activate_after=_ACTIVATE_AFTER)
        print(f"wallet user {user!r} with {_START_BALANCE} tokens; provider {DEMO_PROVIDER_SLUG!r}")
        with KNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, base_url=url) as provider:
            return _walk(provider, admin, user, opened.session_id)


def _walk(provider: KNAIProvider, admin: SandboxAdmin, user: str, session_id: str) -> int:
    _step(1, f"wait_for_session({user!r}): the user opens a session ({_ACTIVATE_AFTER:g} s)")
    started = time.monotonic()
    session = provider.wait_for_session(provider_username=user, poll_interval=0.25, timeout=10)
    _say(f"active after {time.monotonic() - started:.2f} s: {session}")
    session_token = session["session_token"]

    _step(2, "charge the session three times")
    reported = 0
    for amount, model in ((1500, "gpt-4"), (1200, "gpt-4o-mini"), (800, "claude-3")):
        result = provider.charge(session_token=session_token, amount_tokens=amount, model=model)
        reported += amount
        _say(
            f"charged {amount:>5} for {model:<12} -> {result.charge_id}, "
            f"balance {result.remaining_balance} (request {result.meta.request_id})"
        )

    _step(3, "charge more than the wallet holds")
    before = admin.balance(DEMO_PROVIDER_SLUG, user)
    try:
        provider.charge(session_token=session_token, amount_tokens=before + 1, model="gpt-4")
    except InsufficientBalanceError as exc:
        after = admin.balance(DEMO_PROVIDER_SLUG, user)
        _say(f"InsufficientBalanceError: {exc}; balance still {after}")
    else:
        _say("expected InsufficientBalanceError, but the charge went through")
        return 1

    _step(4, "the connection drops after the wallet applied a charge")
    admin.inject_fault("charge", drop="after")
    result = provider.charge(session_token=session_token, amount_tokens=700, model="gpt-4")
    reported += 700
    same_key = [
        c
        for c in admin.charges(DEMO_PROVIDER_SLUG, user)
        if c.idempotency_key == result.meta.idempotency_key
    ]
    _say(
        f"charged 700 after {result.meta.retries} retry with Idempotency-Key "
        f"{result.meta.idempotency_key}: the wallet holds {len(same_key)} charge for that key, "
        f"balance {result.remaining_balance}"
    )

    _step(5, "the session expires")
    admin.expire_session(session_id)
    try:
        provider.charge(session_token=session_token, amount_tokens=100, model="gpt-4")
    except SessionExpiredError as exc:
        _say(f"SessionExpiredError: {exc}")
    else:
        _say("expected SessionExpiredError, but the charge went through")
        return 1

    final = admin.balance(DEMO_PROVIDER_SLUG, user)
    ledger_sum = sum(c.amount_tokens for c in admin.charges(DEMO_PROVIDER_SLUG, user))
    consistent = len(same_key) == 1 and ledger_sum == reported == _START_BALANCE - final
    print(
        f"\nsummary: {_START_BALANCE} - {reported} charged = {final} tokens left; "
        f"ledger agrees: {'yes' if consistent else 'NO'}"
    )
    return 0 if consistent else 1
