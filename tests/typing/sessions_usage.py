"""The session cache as a user writes it (the README's examples), checked by `mypy --strict`."""

from __future__ import annotations

import sys

from knai import ActiveSession, AsyncKNAIProvider, ChargeResult, KNAIError, KNAIProvider, Session
from knai.sessions import AsyncSessionCache, CacheStats, NoActiveSessionError, SessionCache

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

sessions = SessionCache(KNAIProvider(), ttl=60, negative_ttl=0.5, max_users=100)


def bill(provider_username: str, tokens_used: int) -> ChargeResult | None:
    try:
        return sessions.charge(provider_username, tokens_used, "gpt-4")
    except NoActiveSessionError as exc:
        assert_type(exc.last_status, str | None)
        assert_type(exc.provider_username, str)
        return None


assert_type(sessions.get("alice"), ActiveSession)
assert_type(sessions.get("alice", wait=2.5), ActiveSession)
# The cached session is charged with its token as is: no narrowing, no fallback.
assert_type(sessions.get("alice").session_token, str)
cached: Session = sessions.get("alice")
assert_type(sessions.stats(), CacheStats)
assert_type(sessions.stats().hits, int)
assert_type(sessions.invalidate("alice"), None)
error: KNAIError = NoActiveSessionError("alice", "pending")

async_sessions = AsyncSessionCache(AsyncKNAIProvider(), wait=5)


async def session_of(provider_username: str) -> ActiveSession:
    session = await async_sessions.get(provider_username)
    assert_type(session, ActiveSession)
    assert_type(session.session_token, str)
    result = await async_sessions.charge(provider_username, 10, "gpt-4", idempotency_key="r-1")
    assert_type(result, ChargeResult)
    return session


SessionCache(AsyncKNAIProvider())  # type: ignore[arg-type]
AsyncSessionCache(KNAIProvider())  # type: ignore[arg-type]
sessions.get("alice", wait="5")  # type: ignore[arg-type]
