"""The per-user session cache: what it asks the wallet, when, and what a caller sees.

Each behaviour runs through `SessionCache` and `AsyncSessionCache` alike (the
`caches` fixture), against respx; expiry is driven by an injected clock, never
by sleeping. The last part counts the status calls the sandbox wallet receives
over a loopback socket when many requests for the same users arrive at once.
"""

from __future__ import annotations

import asyncio
import pickle
import random
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from knai import (
    ActiveSession,
    AsyncKNAIProvider,
    ChargeResult,
    InsufficientBalanceError,
    KNAIError,
    KNAIProvider,
    ServerError,
    Session,
    SessionExpiredError,
)
from knai.sessions import AsyncSessionCache, CacheStats, NoActiveSessionError, SessionCache
from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, RunningSandbox
from tests.conftest import TOKEN
from tests.support.twin import ACTIVE, CHARGE, CHARGED, PENDING, STATUS, Twins, reply

pytestmark = pytest.mark.anyio

USER = "alice"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Cache:
    """A SessionCache or an AsyncSessionCache, every call awaited the same way."""

    def __init__(self, cache: SessionCache | AsyncSessionCache) -> None:
        self.cache = cache

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.cache, name)(*args, **kwargs)
        return await result if isinstance(self.cache, AsyncSessionCache) else result

    async def get(self, user: str = USER, **kwargs: Any) -> Session:
        session: Session = await self._call("get", user, **kwargs)
        return session

    async def charge(self, user: str = USER, **kwargs: Any) -> ChargeResult:
        kwargs = {"amount_tokens": 1500, "model": "gpt-4", **kwargs}
        result: ChargeResult = await self._call("charge", user, **kwargs)
        return result

    async def no_session(self, user: str = USER, **kwargs: Any) -> NoActiveSessionError:
        with pytest.raises(NoActiveSessionError) as caught:
            await self.get(user, **kwargs)
        return caught.value

    def invalidate(self, user: str = USER) -> None:
        self.cache.invalidate(user)

    def stats(self) -> CacheStats:
        return self.cache.stats()


MakeCache = Callable[..., Cache]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def caches(twins: Twins, clock: Clock) -> MakeCache:
    """Makes caches of the `twins` flavour over a respx-bound provider (no retries)."""

    def make(**options: Any) -> Cache:
        provider = twins.make(max_retries=0).provider
        options.setdefault("clock", clock)
        if isinstance(provider, AsyncKNAIProvider):
            return Cache(AsyncSessionCache(provider, **options))
        return Cache(SessionCache(provider, **options))

    return make


@pytest.fixture
def status(api: respx.MockRouter) -> respx.Route:
    """The status endpoint answering an active session with the test TOKEN."""
    return api.get(STATUS).mock(return_value=reply(200, ACTIVE))


def expiring_in(seconds: float) -> dict[str, Any]:
    expires = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return {**ACTIVE, "expires_at": expires.isoformat()}


# -- hits, misses, expiry -----------------------------------------------------


async def test_second_get_is_served_from_memory(caches: MakeCache, status: respx.Route) -> None:
    cache = caches()
    first = await cache.get()
    second = await cache.get()
    assert isinstance(first, ActiveSession)  # the typed path: session_token is a str
    assert first.session_token == TOKEN
    assert second is first
    assert status.call_count == 1
    assert status.calls.last.request.url.params["provider_username"] == USER
    assert cache.stats() == CacheStats(hits=1, misses=1, polls=1)


async def test_session_is_fetched_again_after_ttl(
    caches: MakeCache, status: respx.Route, clock: Clock
) -> None:
    cache = caches(ttl=10)
    await cache.get()
    clock.advance(9.9)
    await cache.get()
    assert status.call_count == 1
    clock.advance(0.1)
    await cache.get()
    assert status.call_count == 2
    assert cache.stats() == CacheStats(hits=1, misses=2, polls=2)


async def test_expires_at_less_margin_ends_the_entry_before_ttl(
    caches: MakeCache, api: respx.MockRouter, clock: Clock
) -> None:
    route = api.get(STATUS).mock(return_value=reply(200, expiring_in(100)))
    cache = caches(ttl=300, expiry_margin=30)
    await cache.get()
    clock.advance(65)
    await cache.get()
    assert route.call_count == 1
    clock.advance(6)  # 71 s: past expires_at - 30 s
    await cache.get()
    assert route.call_count == 2


async def test_session_ending_within_the_margin_is_returned_but_not_kept(
    caches: MakeCache, api: respx.MockRouter
) -> None:
    route = api.get(STATUS).mock(return_value=reply(200, expiring_in(10)))
    cache = caches(expiry_margin=30)
    assert (await cache.get()).session_token == TOKEN
    await cache.get()
    assert route.call_count == 2


# -- no active session --------------------------------------------------------


async def test_no_session_raises_with_the_last_status_and_is_cached_briefly(
    caches: MakeCache, api: respx.MockRouter, clock: Clock
) -> None:
    route = api.get(STATUS).mock(return_value=reply(200, PENDING))
    cache = caches(negative_ttl=1.0)
    exc = await cache.no_session()
    assert isinstance(exc, KNAIError)
    assert (exc.last_status, exc.provider_username) == ("pending", USER)
    again = await cache.no_session()
    assert again is not exc
    assert again.last_status == "pending"
    assert route.call_count == 1
    clock.advance(1.0)
    await cache.no_session()
    assert route.call_count == 2


async def test_negative_ttl_zero_asks_the_wallet_every_time(
    caches: MakeCache, api: respx.MockRouter
) -> None:
    route = api.get(STATUS).mock(return_value=reply(200, {"status": "inactive"}))
    cache = caches(negative_ttl=0)
    await cache.no_session()
    await cache.no_session()
    assert route.call_count == 2


async def test_user_who_pays_is_served_once_the_negative_answer_ends(
    caches: MakeCache, api: respx.MockRouter, clock: Clock
) -> None:
    api.get(STATUS).mock(side_effect=[reply(200, PENDING), reply(200, ACTIVE)])
    cache = caches()
    await cache.no_session()
    clock.advance(1.0)
    assert (await cache.get()).session_token == TOKEN


async def test_wait_on_a_miss_returns_the_session_once_active(
    caches: MakeCache, api: respx.MockRouter
) -> None:
    route = api.get(STATUS).mock(
        side_effect=[reply(200, PENDING), reply(200, PENDING), reply(200, ACTIVE)]
    )
    cache = caches(wait=5, poll_interval=0.001)
    assert (await cache.get()).session_token == TOKEN
    assert route.call_count == 3
    assert cache.stats().polls == 2  # one get_session, one wait_for_session


async def test_get_wait_zero_overrides_the_constructors_wait(
    caches: MakeCache, api: respx.MockRouter
) -> None:
    route = api.get(STATUS).mock(side_effect=[reply(200, PENDING), reply(200, ACTIVE)])
    cache = caches(wait=5, poll_interval=0.001)
    await cache.no_session(wait=0)
    assert route.call_count == 1


async def test_wait_that_runs_out_raises_no_active_session(
    caches: MakeCache, api: respx.MockRouter
) -> None:
    api.get(STATUS).mock(return_value=reply(200, PENDING))
    cache = caches(poll_interval=0.001)
    exc = await cache.no_session(wait=0.02)
    assert exc.last_status == "pending"


async def test_waiting_get_asks_again_despite_a_cached_no(
    caches: MakeCache, api: respx.MockRouter
) -> None:
    api.get(STATUS).mock(side_effect=[reply(200, PENDING), reply(200, ACTIVE)])
    cache = caches(poll_interval=0.001)
    await cache.no_session()
    assert (await cache.get(wait=5)).session_token == TOKEN


async def test_errors_are_not_cached(caches: MakeCache, api: respx.MockRouter) -> None:
    route = api.get(STATUS).mock(side_effect=[reply(503, {"error": "down"}), reply(200, ACTIVE)])
    cache = caches()
    with pytest.raises(ServerError):
        await cache.get()
    assert (await cache.get()).session_token == TOKEN
    assert route.call_count == 2


# -- eviction and invalidation ------------------------------------------------


async def test_least_recently_used_user_leaves_first(
    caches: MakeCache, status: respx.Route
) -> None:
    cache = caches(max_users=2)
    await cache.get("a")
    await cache.get("b")
    await cache.get("a")  # a is now the most recent
    await cache.get("c")  # evicts b
    assert status.call_count == 3
    await cache.get("a")
    assert status.call_count == 3
    await cache.get("b")
    assert status.call_count == 4
    asked = [call.request.url.params["provider_username"] for call in status.calls]
    assert asked == ["a", "b", "c", "b"]


async def test_invalidate_makes_the_next_get_ask_the_wallet(
    caches: MakeCache, status: respx.Route
) -> None:
    cache = caches()
    await cache.get()
    cache.invalidate()
    cache.invalidate("never-seen")  # no error
    await cache.get()
    assert status.call_count == 2


# -- charge -------------------------------------------------------------------


async def test_charge_spends_the_cached_token(
    caches: MakeCache, api: respx.MockRouter, status: respx.Route
) -> None:
    charge = api.post(CHARGE).mock(return_value=reply(200, CHARGED))
    cache = caches()
    await cache.charge(idempotency_key="req-1")
    result = await cache.charge()
    assert result.charge_id == "ch_1"
    assert status.call_count == 1
    first = charge.calls[0].request
    assert first.headers["X-Session-Token"] == TOKEN
    assert first.headers["Idempotency-Key"] == "req-1"


@pytest.mark.parametrize("refusal", [403, 410])
async def test_charge_refused_for_the_session_drops_the_user_and_raises(
    caches: MakeCache, api: respx.MockRouter, status: respx.Route, refusal: int
) -> None:
    api.post(CHARGE).mock(side_effect=[reply(refusal, {"error": "gone"}), reply(200, CHARGED)])
    cache = caches()
    with pytest.raises(SessionExpiredError):
        await cache.charge()
    assert status.call_count == 1
    await cache.charge()
    assert status.call_count == 2


async def test_charge_refused_for_balance_keeps_the_session(
    caches: MakeCache, api: respx.MockRouter, status: respx.Route
) -> None:
    api.post(CHARGE).mock(return_value=reply(402, {"error": "Insufficient wallet balance"}))
    cache = caches()
    for _ in range(2):
        with pytest.raises(InsufficientBalanceError):
            await cache.charge()
    assert status.call_count == 1


async def test_charge_without_a_session_sends_no_charge(
    caches: MakeCache, api: respx.MockRouter
) -> None:
    api.get(STATUS).mock(return_value=reply(200, PENDING))
    charge = api.post(CHARGE)
    cache = caches()
    with pytest.raises(NoActiveSessionError):
        await cache.charge()
    assert charge.call_count == 0


# -- arguments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("ttl", 0, ValueError),
        ("ttl", float("inf"), ValueError),
        ("negative_ttl", -1, ValueError),
        ("expiry_margin", "30", TypeError),
        ("wait", -0.5, ValueError),
        ("poll_interval", 0, ValueError),
        ("max_users", 0, ValueError),
        ("max_users", 1.5, TypeError),
        ("clock", 3.0, TypeError),
    ],
)
async def test_bad_options_raise_naming_the_argument(
    caches: MakeCache, option: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=option):
        caches(**{option: value})


async def test_bad_wait_on_get_raises_before_anything_is_sent(
    caches: MakeCache, api: respx.MockRouter
) -> None:
    route = api.get(STATUS)
    with pytest.raises(ValueError, match="wait"):
        await caches().get(wait=-1)
    assert route.call_count == 0


def test_cache_refuses_a_provider_of_the_other_flavour() -> None:
    sync = KNAIProvider("sk_test_x", "acme")
    asynchronous = AsyncKNAIProvider("sk_test_x", "acme")
    with pytest.raises(TypeError, match="AsyncKNAIProvider"):
        AsyncSessionCache(sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="KNAIProvider"):
        SessionCache(asynchronous)  # type: ignore[arg-type]
    sync.close()


def test_import_knai_does_not_load_the_cache() -> None:
    code = "import sys, knai; print('knai.sessions' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- single flight, in memory --------------------------------------------------


async def test_cancelled_waiter_does_not_cancel_the_shared_call(
    aclient: AsyncKNAIProvider, api: respx.MockRouter
) -> None:
    gate = asyncio.Event()

    async def slow_status(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return reply(200, ACTIVE)

    route = api.get(STATUS).mock(side_effect=slow_status)
    cache = AsyncSessionCache(aclient)
    first = asyncio.ensure_future(cache.get(USER))
    second = asyncio.ensure_future(cache.get(USER))
    await asyncio.sleep(0.01)
    first.cancel()
    gate.set()
    assert (await second).session_token == TOKEN
    with pytest.raises(asyncio.CancelledError):
        await first
    assert route.call_count == 1
    await cache.get(USER)  # kept, although its first caller left
    assert route.call_count == 1


async def test_invalidate_during_a_call_does_not_keep_its_answer(
    aclient: AsyncKNAIProvider, api: respx.MockRouter
) -> None:
    gate = asyncio.Event()

    async def slow_status(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return reply(200, ACTIVE)

    route = api.get(STATUS).mock(side_effect=slow_status)
    cache = AsyncSessionCache(aclient)
    pending = asyncio.ensure_future(cache.get(USER))
    await asyncio.sleep(0.01)
    cache.invalidate(USER)
    gate.set()
    await pending
    route.mock(return_value=reply(200, ACTIVE))
    await cache.get(USER)
    assert route.call_count == 2


def test_threads_asking_at_once_share_one_status_call(
    client: KNAIProvider, api: respx.MockRouter
) -> None:
    gate = threading.Event()

    def slow_status(request: httpx.Request) -> httpx.Response:
        gate.wait(10)
        return reply(200, PENDING)

    route = api.get(STATUS).mock(side_effect=slow_status)
    cache = SessionCache(client)
    seen: list[str | None] = []

    def ask() -> None:
        try:
            cache.get(USER)
        except NoActiveSessionError as exc:
            seen.append(exc.last_status)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    while cache.stats().misses < len(threads):
        gate.wait(0.001)
    gate.set()
    for thread in threads:
        thread.join()
    assert route.call_count == 1
    assert seen == ["pending"] * len(threads)


# -- over loopback: status calls the sandbox counts ---------------------------


@pytest.fixture
def served(knai_sandbox_server: RunningSandbox) -> RunningSandbox:
    return knai_sandbox_server


def open_sessions(served: RunningSandbox, users: list[str]) -> dict[str, str]:
    """Wallets and active sessions for `users`; returns each user's token."""
    tokens = {}
    for user in users:
        served.ledger.add_user(DEMO_PROVIDER_SLUG, user, balance=10_000)
        tokens[user] = served.ledger.open_session(DEMO_PROVIDER_SLUG, user).session_token
    return tokens


def status_calls(served: RunningSandbox) -> int:
    return served.admin.stats().requests["status"]


@pytest.fixture
async def async_cache(served: RunningSandbox) -> AsyncIterator[AsyncSessionCache]:
    async with AsyncKNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, served.url) as provider:
        yield AsyncSessionCache(provider)


@pytest.fixture
def sync_cache(served: RunningSandbox) -> Iterator[SessionCache]:
    with KNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, served.url) as provider:
        yield SessionCache(provider)


async def test_1000_tasks_for_one_cold_user_make_one_status_call(
    served: RunningSandbox, async_cache: AsyncSessionCache
) -> None:
    token = open_sessions(served, ["cold"])["cold"]
    sessions = await asyncio.gather(*(async_cache.get("cold") for _ in range(1000)))
    assert {s.session_token for s in sessions} == {token}
    assert status_calls(served) == 1
    assert async_cache.stats() == CacheStats(hits=0, misses=1000, polls=1)


def test_64_threads_for_one_cold_user_make_one_status_call(
    served: RunningSandbox, sync_cache: SessionCache
) -> None:
    token = open_sessions(served, ["cold"])["cold"]
    start = threading.Barrier(64)
    tokens: list[str | None] = []

    def ask() -> None:
        start.wait()
        tokens.append(sync_cache.get("cold").session_token)

    threads = [threading.Thread(target=ask) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tokens == [token] * 64
    assert status_calls(served) == 1


async def test_200_users_20_requests_each_make_200_status_calls(
    served: RunningSandbox, async_cache: AsyncSessionCache
) -> None:
    users = [f"user-{i}" for i in range(200)]
    tokens = open_sessions(served, users)
    requests = [user for user in users for _ in range(20)]
    random.Random(13).shuffle(requests)
    sessions = await asyncio.gather(*(async_cache.get(user) for user in requests))
    assert [s.session_token for s in sessions] == [tokens[user] for user in requests]
    assert status_calls(served) == 200
    assert async_cache.stats().polls == 200


async def test_expired_session_is_dropped_and_reported(
    served: RunningSandbox, async_cache: AsyncSessionCache
) -> None:
    open_sessions(served, ["bob"])
    session = await async_cache.get("bob")
    assert session.session_id is not None
    served.admin.expire_session(session.session_id)
    with pytest.raises(SessionExpiredError):
        await async_cache.charge("bob", 10, "gpt-4")
    with pytest.raises(NoActiveSessionError) as caught:
        await async_cache.get("bob")
    assert caught.value.last_status == "expired"
    assert status_calls(served) == 2


# -- the README's examples ----------------------------------------------------


def readme_section_blocks(name: str) -> list[str]:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_sync_example_bills_a_user_and_reports_one_without_a_session(
    served: RunningSandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KNAI_API_KEY", DEMO_API_KEY)
    monkeypatch.setenv("KNAI_PROVIDER_SLUG", DEMO_PROVIDER_SLUG)
    monkeypatch.setenv("KNAI_BASE_URL", served.url)
    open_sessions(served, ["carol"])
    served.ledger.add_user(DEMO_PROVIDER_SLUG, "dave", balance=10)
    sync_example = readme_section_blocks("Serving a paid endpoint")[0]
    namespace: dict[str, Any] = {}
    exec(compile(sync_example, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    try:
        result = namespace["bill"]("carol", 250)
        assert result.remaining_balance == 10_000 - 250
        assert namespace["bill"]("dave", 1) is None
        assert "dave has no active session (inactive)" in capsys.readouterr().out
    finally:
        namespace["provider"].close()


def test_readme_async_example_compiles() -> None:
    compile(readme_section_blocks("Serving a paid endpoint")[1], "README.md", "exec")


async def test_no_token_in_errors_stats_or_logs(
    caches: MakeCache,
    api: respx.MockRouter,
    status: respx.Route,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    api.post(CHARGE).mock(return_value=reply(410, {"error": "Session has expired"}))
    cache = caches()
    with pytest.raises(SessionExpiredError) as expired:
        await cache.charge()
    status.mock(return_value=reply(200, PENDING))
    missing = await cache.no_session()
    seen = [repr(cache.stats()), caplog.text, repr(cache.cache)]
    for exc in (expired.value, missing):
        seen += [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
    assert not [text for text in seen if TOKEN in text]


def test_threads_sharing_an_interrupted_call_get_an_error_not_the_interrupt(
    client: KNAIProvider, api: respx.MockRouter
) -> None:
    gate = threading.Event()

    def interrupted(request: httpx.Request) -> httpx.Response:
        gate.wait(10)
        raise KeyboardInterrupt

    api.get(STATUS).mock(side_effect=interrupted)
    cache = SessionCache(client)
    outcomes: list[BaseException] = []

    def ask() -> None:
        try:
            cache.get(USER)
        except BaseException as exc:  # recording what each thread saw, interrupts too
            outcomes.append(exc)

    leader = threading.Thread(target=ask)
    leader.start()
    while cache.stats().misses < 1:
        gate.wait(0.001)
    follower = threading.Thread(target=ask)
    follower.start()
    while cache.stats().misses < 2:
        gate.wait(0.001)
    gate.set()
    leader.join()
    follower.join()
    kinds = sorted(type(exc).__name__ for exc in outcomes)
    assert kinds == ["KNAIError", "KeyboardInterrupt"]


def test_sessions_module_exports_exactly_its_public_names() -> None:
    import knai.sessions

    names = {"AsyncSessionCache", "CacheStats", "NoActiveSessionError", "SessionCache"}
    assert set(knai.sessions.__all__) == names
    for name in names:
        value = getattr(knai.sessions, name)
        assert value.__module__ == "knai.sessions"
        assert value.__doc__


def test_no_active_session_error_survives_pickling() -> None:
    exc = pickle.loads(pickle.dumps(NoActiveSessionError(USER, "pending")))  # noqa: S301 - our own bytes
    assert (type(exc), exc.provider_username, exc.last_status) == (
        NoActiveSessionError,
        USER,
        "pending",
    )
    assert str(exc) == str(NoActiveSessionError(USER, "pending"))


def test_invalidate_during_a_call_does_not_keep_its_answer_sync(
    client: KNAIProvider, api: respx.MockRouter
) -> None:
    gate = threading.Event()

    def slow_status(request: httpx.Request) -> httpx.Response:
        gate.wait(10)
        return reply(200, ACTIVE)

    route = api.get(STATUS).mock(side_effect=slow_status)
    cache = SessionCache(client)
    asking = threading.Thread(target=cache.get, args=(USER,))
    asking.start()
    while cache.stats().misses < 1:
        gate.wait(0.001)
    cache.invalidate(USER)
    gate.set()
    asking.join()
    cache.get(USER)
    assert route.call_count == 2
