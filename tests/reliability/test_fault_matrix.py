"""The fault matrix: both clients against misbehaving servers over real loopback sockets.

Each case names a fault and checks what a user can rely on: the exception class
(or the result), the attempts the server saw, one Idempotency-Key on every
attempt of a charge, the time taken against the configured budget (loose upper
bounds: budget + 1.5 s), and the wallet's ledger where the sandbox served it.

The sandbox wallet plays the faults it knows (dropped connections, slow
answers); `_rogue.RogueServer` plays the rest (resets, stalls, HTML, truncated,
endless or trickled bodies). Retry pauses are the quick ones of the pytest
plugin, really slept, and recorded in `clients.sleeps`.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import re
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from knai import (
    APIConnectionError,
    APITimeoutError,
    AsyncKNAIProvider,
    ChargeResult,
    KNAIError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    Session,
    SessionWaitTimeoutError,
)
from knai.testing import (
    DEMO_API_KEY,
    DEMO_BALANCE,
    DEMO_PROVIDER_SLUG,
    DEMO_USERNAME,
    DropWhen,
    RunningSandbox,
    SandboxAdmin,
)
from tests.conftest import API_KEY, SLUG, TOKEN
from tests.reliability.conftest import Clients
from tests.support.rogue import (
    Action,
    Close,
    Raw,
    Reply,
    Request,
    Reset,
    RogueServer,
    Stall,
    Stream,
    closed_port,
    gzip_bomb,
)
from tests.support.statuses import PERMANENT, RETRIED
from tests.support.twin import ACTIVE, CHARGE, CHARGED, PENDING, STATUS, Twin

pytestmark = pytest.mark.anyio

SLACK = 1.5  # seconds allowed beyond a budget: loose, never tight (lower bounds allow 5% early)
MIB = 1024 * 1024
ENDPOINTS = ["status", "charge"]


@dataclass
class Outcome:
    """What one call came to, and how long it took."""

    result: Session | ChargeResult | None
    error: KNAIError | None
    elapsed: float


async def run(call: Awaitable[Any]) -> Outcome:
    """Await `call`; a KNAIError is returned, anything else propagates (and fails the test)."""
    started = time.monotonic()
    try:
        result = await call
    except KNAIError as exc:
        return Outcome(None, exc, time.monotonic() - started)
    return Outcome(result, None, time.monotonic() - started)


def call(twin: Twin, endpoint: str, **options: Any) -> Awaitable[Any]:
    """One status poll or one charge (1500 tokens of gpt-4 on TOKEN)."""
    if endpoint == "status":
        return twin.get_session("user123", **options)
    return twin.charge(TOKEN, 1500, "gpt-4", **options)


def success(endpoint: str) -> Reply:
    return Reply(200, ACTIVE if endpoint == "status" else CHARGED)


def failing(status: int, *headers: tuple[str, str]) -> Reply:
    return Reply(status, {"error": f"failed with {status}"}, headers=headers)


def expect_one_key(rogue: RogueServer, endpoint: str) -> None:
    """A charge carried one Idempotency-Key on every attempt; a status poll carried none."""
    keys = rogue.header_values("Idempotency-Key")
    if endpoint == "status":
        assert keys == [None] * rogue.count
    else:
        assert keys[0], "a charge went out without an Idempotency-Key"
        assert keys == [keys[0]] * rogue.count, f"the key changed between attempts: {keys}"


def expect_paths(rogue: RogueServer, endpoint: str) -> None:
    path = STATUS if endpoint == "status" else CHARGE
    assert {r.path for r in rogue.requests} == {path}


# -- no answer: refused, reset, closed, cut, stalled ----------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_connection_refused_is_retried_then_raised_and_was_never_applied(
    clients: Clients, endpoint: str
) -> None:
    twin = clients.make(f"http://127.0.0.1:{closed_port()}")
    outcome = await run(call(twin, endpoint))
    error = outcome.error
    assert type(error) is APIConnectionError
    assert error.status_code is None
    assert error.attempts == 3
    assert len(clients.sleeps) == 2
    assert outcome.elapsed < sum(clients.sleeps) + SLACK
    if endpoint == "charge":
        assert error.idempotency_key
        assert error.may_have_been_applied is False  # nothing reached a server


NO_ANSWER: dict[str, Callable[[], Action]] = {
    "reset": Reset,
    "closed": Close,
    # A 2xx whose body stops 10 bytes into the 1000 it announced.
    "cut-body": lambda: Stream(lambda: [b'{"charge_i'], length=1000, limit=1.0),
    "not-http": lambda: Raw(b"SSH-2.0-OpenSSH_9.6\r\n"),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("fault", NO_ANSWER)
async def test_no_answer_once_is_retried_with_the_same_key_and_succeeds(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str, fault: str
) -> None:
    rogue = rogue_factory(NO_ANSWER[fault](), success(endpoint))
    outcome = await run(call(clients.make(rogue.url), endpoint))
    assert outcome.error is None, outcome.error
    assert outcome.result is not None
    assert outcome.result.meta.retries == 1
    assert rogue.count == 2
    expect_one_key(rogue, endpoint)
    expect_paths(rogue, endpoint)
    assert outcome.elapsed < sum(clients.sleeps) + SLACK


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("fault", NO_ANSWER)
async def test_no_answer_every_time_raises_connection_error_that_may_have_been_applied(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str, fault: str
) -> None:
    rogue = rogue_factory(NO_ANSWER[fault]())
    outcome = await run(call(clients.make(rogue.url), endpoint))
    error = outcome.error
    assert type(error) is APIConnectionError
    assert error.attempts == rogue.count == 3
    expect_one_key(rogue, endpoint)
    assert outcome.elapsed < sum(clients.sleeps) + SLACK
    if endpoint == "charge":
        # The request went out each time: the wallet may have applied it.
        assert error.may_have_been_applied is True
        assert error.idempotency_key == rogue.requests[0].header("Idempotency-Key")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_stall_past_the_read_timeout_once_is_retried_and_succeeds(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str
) -> None:
    rogue = rogue_factory(Stall(10), success(endpoint))
    outcome = await run(call(clients.make(rogue.url, timeout=0.2), endpoint))
    assert outcome.error is None, outcome.error
    assert outcome.result is not None
    assert outcome.result.meta.retries == 1
    assert rogue.count == 2
    expect_one_key(rogue, endpoint)
    assert 0.95 * 0.2 <= outcome.elapsed < 0.2 + sum(clients.sleeps) + SLACK
    # The timed-out attempt's connection was closed, not left open to the stalled server.
    assert rogue.wait_until(lambda: rogue.hangups == 1)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_stall_past_the_read_timeout_every_time_raises_timeout_after_max_retries(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str
) -> None:
    rogue = rogue_factory(Stall(10))
    outcome = await run(call(clients.make(rogue.url, timeout=0.2), endpoint))
    error = outcome.error
    assert type(error) is APITimeoutError
    assert error.attempts == rogue.count == 3
    expect_one_key(rogue, endpoint)
    assert 0.95 * 3 * 0.2 <= outcome.elapsed < 3 * 0.2 + sum(clients.sleeps) + SLACK
    if endpoint == "charge":
        assert error.may_have_been_applied is True
    assert rogue.wait_until(lambda: rogue.hangups == 3 and rogue.open_connections == 0)


def trickle(body: bytes, pieces: int = 30) -> Callable[[], Iterable[bytes]]:
    step = max(1, len(body) // pieces)
    return lambda: [body[i : i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize("endpoint", ["wait", "charge"])
async def test_a_trickled_answer_cannot_hold_a_call_past_its_budget(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str
) -> None:
    body = (ACTIVE if endpoint == "wait" else CHARGED) | {"pad": "x" * 20}
    rogue = rogue_factory(Stream(trickle(Reply(200, body).encoded()), interval=0.05, limit=5))
    twin = clients.make(rogue.url, timeout=0.1)
    if endpoint == "wait":
        budget = 0.1
        outcome = await run(twin.wait_for_session("user123", poll_interval=0.05, timeout=budget))
        assert isinstance(outcome.error, SessionWaitTimeoutError)
    else:
        budget = 3 * 0.1
        outcome = await run(call(twin, "charge"))
        assert isinstance(outcome.error, APITimeoutError)
    assert outcome.elapsed < budget + sum(clients.sleeps) + SLACK


# -- the sandbox wallet: drops and slow answers, and its ledger afterwards -------------------------


@pytest.fixture
def admin(knai_sandbox_server: RunningSandbox) -> SandboxAdmin:
    return knai_sandbox_server.admin


@pytest.fixture
def token(admin: SandboxAdmin) -> str:
    return admin.open_session(DEMO_PROVIDER_SLUG, DEMO_USERNAME).session_token


def sandbox_client(clients: Clients, server: RunningSandbox, **options: Any) -> Twin:
    return clients.make(
        server.url, provider_api_key=DEMO_API_KEY, provider_slug=DEMO_PROVIDER_SLUG, **options
    )


def keyed_client(
    clients: Clients, server: RunningSandbox, **options: Any
) -> tuple[Twin, list[str | None]]:
    """A sandbox client whose httpx client records every request's Idempotency-Key."""
    keys: list[str | None] = []

    def hook(request: httpx.Request) -> None:
        keys.append(request.headers.get("Idempotency-Key"))

    async def async_hook(request: httpx.Request) -> None:
        hook(request)

    hooks: dict[str, Any] = {"request": [async_hook if clients.is_async else hook]}
    http = (
        httpx.AsyncClient(event_hooks=hooks)
        if clients.is_async
        else httpx.Client(event_hooks=hooks)
    )
    clients.closing(http)
    return sandbox_client(clients, server, http_client=http, **options), keys


def ledger(admin: SandboxAdmin) -> list[tuple[str, int, str | None]]:
    return [
        (c.charge_id, c.amount_tokens, c.idempotency_key)
        for c in admin.charges(DEMO_PROVIDER_SLUG, DEMO_USERNAME)
    ]


@pytest.mark.parametrize("drop", ["before", "after"])
async def test_dropped_charge_is_retried_with_its_key_into_exactly_one_debit(
    clients: Clients,
    knai_sandbox_server: RunningSandbox,
    admin: SandboxAdmin,
    token: str,
    drop: DropWhen,
) -> None:
    twin, keys = keyed_client(clients, knai_sandbox_server)
    admin.inject_fault("charge", drop=drop)
    outcome = await run(twin.charge(token, 1500, "gpt-4"))
    result = outcome.result
    assert outcome.error is None, outcome.error
    assert isinstance(result, ChargeResult)
    assert admin.stats().requests["charge"] == 2
    assert len(keys) == 2
    assert keys == [result.meta.idempotency_key] * 2
    assert ledger(admin) == [(result.charge_id, 1500, result.meta.idempotency_key)]
    # "after": the retry got the first attempt's recorded answer, not a second debit.
    replayed = result.meta.headers.get("idempotent-replayed") == "true"
    assert replayed is (drop == "after")
    assert result.remaining_balance == admin.balance(DEMO_PROVIDER_SLUG, DEMO_USERNAME)
    assert result.remaining_balance == DEMO_BALANCE - 1500
    assert outcome.elapsed < sum(clients.sleeps) + SLACK


async def test_charge_answered_too_late_once_is_retried_and_debited_once(
    clients: Clients, knai_sandbox_server: RunningSandbox, admin: SandboxAdmin, token: str
) -> None:
    twin, keys = keyed_client(clients, knai_sandbox_server, timeout=0.2)
    admin.inject_fault("charge", delay=0.5)
    outcome = await run(twin.charge(token, 1500, "gpt-4"))
    result = outcome.result
    assert isinstance(result, ChargeResult), outcome.error
    assert result.meta.retries == 1
    assert keys == [result.meta.idempotency_key] * 2
    assert outcome.elapsed < 0.2 + sum(clients.sleeps) + SLACK
    await asyncio.sleep(0.6)  # the slow first attempt reaches the ledger now: a replay
    assert ledger(admin) == [(result.charge_id, 1500, result.meta.idempotency_key)]
    assert admin.balance(DEMO_PROVIDER_SLUG, DEMO_USERNAME) == DEMO_BALANCE - 1500


async def test_charge_answered_too_late_every_time_times_out_and_its_key_settles_it(
    clients: Clients, knai_sandbox_server: RunningSandbox, admin: SandboxAdmin, token: str
) -> None:
    twin, keys = keyed_client(clients, knai_sandbox_server, timeout=0.2)
    admin.inject_fault("charge", delay=0.5, times=3)
    outcome = await run(twin.charge(token, 1500, "gpt-4"))
    error = outcome.error
    assert type(error) is APITimeoutError
    assert error.attempts == 3
    assert error.may_have_been_applied is True
    assert keys == [error.idempotency_key] * 3
    assert outcome.elapsed < 3 * 0.2 + sum(clients.sleeps) + SLACK
    # All three slow attempts land in the wallet within 0.5 s of arriving: one debit, two replays.
    await asyncio.sleep(1.0)
    assert admin.stats().requests["charge"] == 3
    [(charge_id, amount, key)] = ledger(admin)
    assert (amount, key) == (1500, error.idempotency_key)
    settled = await twin.charge(token, 1500, "gpt-4", idempotency_key=error.idempotency_key)
    assert settled.charge_id == charge_id
    assert settled.meta.headers.get("idempotent-replayed") == "true"
    assert ledger(admin) == [(charge_id, 1500, key)]
    assert admin.balance(DEMO_PROVIDER_SLUG, DEMO_USERNAME) == DEMO_BALANCE - 1500


# -- error statuses -----------------------------------------------------------------------------

FINAL = RETRIED  # the error a retried status ends in once retries run out
RETRIED_STATUSES = list(FINAL)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("status", RETRIED_STATUSES)
async def test_transient_status_twice_is_retried_with_one_key_then_succeeds(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str, status: int
) -> None:
    rogue = rogue_factory(failing(status), failing(status), success(endpoint))
    outcome = await run(call(clients.make(rogue.url), endpoint))
    assert outcome.error is None, outcome.error
    assert outcome.result is not None
    assert outcome.result.meta.retries == 2
    assert rogue.count == 3
    expect_one_key(rogue, endpoint)
    expect_paths(rogue, endpoint)
    assert len(clients.sleeps) == 2
    assert outcome.elapsed < sum(clients.sleeps) + SLACK


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("status", RETRIED_STATUSES)
async def test_transient_status_every_time_is_raised_once_max_retries_are_spent(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str, status: int
) -> None:
    rogue = rogue_factory(failing(status))
    outcome = await run(call(clients.make(rogue.url, max_retries=3), endpoint))
    error = outcome.error
    assert type(error) is FINAL[status]
    assert error.status_code == status
    assert error.attempts == rogue.count == 4
    assert str(error).startswith(f"failed with {status} (HTTP {status})")
    expect_one_key(rogue, endpoint)
    assert outcome.elapsed < sum(clients.sleeps) + SLACK
    if endpoint == "charge":
        # A 5xx does not prove nothing was charged; a 408 or a 429 does.
        assert error.may_have_been_applied is (status >= 500)


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


async def test_429_retry_after_in_seconds_is_waited_for_exactly(
    clients: Clients, rogue_factory: Callable[..., RogueServer]
) -> None:
    rogue = rogue_factory(failing(429, ("Retry-After", "1")), success("charge"))
    outcome = await run(call(clients.make(rogue.url), "charge"))
    assert isinstance(outcome.result, ChargeResult), outcome.error
    assert clients.sleeps == [1.0]
    assert rogue.count == 2
    expect_one_key(rogue, "charge")
    assert 0.95 <= outcome.elapsed < 1.0 + SLACK
    assert rogue.requests[1].at - rogue.requests[0].at >= 0.95


async def test_429_retry_after_as_an_http_date_is_waited_for(
    clients: Clients, rogue_factory: Callable[..., RogueServer]
) -> None:
    rogue = rogue_factory(failing(429, ("Retry-After", http_date(1))), success("charge"))
    outcome = await run(call(clients.make(rogue.url), "charge"))
    assert isinstance(outcome.result, ChargeResult), outcome.error
    [pause] = clients.sleeps
    assert 0.0 <= pause <= 1.0  # the date has whole seconds: up to a second early
    assert rogue.count == 2
    expect_one_key(rogue, "charge")
    assert outcome.elapsed < 1.0 + SLACK


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(429, "120"), (429, "__date__"), (503, "3600")],
)
async def test_retry_after_beyond_the_cap_is_raised_at_once(
    clients: Clients,
    rogue_factory: Callable[..., RogueServer],
    endpoint: str,
    status: int,
    retry_after: str,
) -> None:
    value = http_date(600) if retry_after == "__date__" else retry_after
    rogue = rogue_factory(failing(status, ("Retry-After", value)), success(endpoint))
    outcome = await run(call(clients.make(rogue.url), endpoint))
    error = outcome.error
    assert type(error) is FINAL[status]
    assert error.attempts == rogue.count == 1
    assert error.retry_after is not None
    assert error.retry_after > 60
    assert clients.sleeps == []
    assert outcome.elapsed < SLACK


NEVER_RETRIED = PERMANENT


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("status", NEVER_RETRIED)
async def test_permanent_status_is_raised_after_one_attempt_and_was_not_applied(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str, status: int
) -> None:
    rogue = rogue_factory(failing(status), success(endpoint))
    outcome = await run(call(clients.make(rogue.url, max_retries=5), endpoint))
    error = outcome.error
    assert type(error) is NEVER_RETRIED[status]
    assert error.status_code == status
    assert error.attempts == rogue.count == 1
    assert clients.sleeps == []
    assert outcome.elapsed < SLACK
    if endpoint == "charge":
        assert error.may_have_been_applied is False
        assert error.idempotency_key == rogue.requests[0].header("Idempotency-Key")


async def test_permanent_status_after_transient_ones_keeps_the_charge_unknown(
    clients: Clients, rogue_factory: Callable[..., RogueServer]
) -> None:
    """A 503 then a 409: the first attempt may have gone through, so the outcome stays unknown."""
    rogue = rogue_factory(failing(503), failing(409))
    outcome = await run(call(clients.make(rogue.url), "charge"))
    assert type(outcome.error) is KNAIError
    assert outcome.error.status_code == 409
    assert outcome.error.attempts == rogue.count == 2
    assert outcome.error.may_have_been_applied is True
    expect_one_key(rogue, "charge")


# -- 2xx answers that are not the protocol's JSON -------------------------------------------------


@dataclass(frozen=True)
class Body:
    """A 2xx body, and whether each endpoint must accept it."""

    content: bytes
    status_ok: bool = False
    charge_ok: bool = False
    content_type: str | None = "application/json"


BODIES: dict[str, Body] = {
    "html": Body(b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"),
    "empty": Body(b""),
    "truncated-json": Body(b'{"status": "active", "session_tok'),
    "json-array": Body(b'[{"status": "active", "session_token": "t"}]'),
    "json-string": Body(b'"active"'),
    "json-null": Body(b"null"),
    "invalid-utf8": Body(b'{"status": "\xff\xfe"}'),
    "nested-100k-deep": Body(b"[" * 100_000),
    # The protocol documents no charge fields, so a charge accepts any object.
    "missing-status": Body(b'{"session_id": "s", "charge_id": "ch_1"}', charge_ok=True),
    "active-missing-session_token": Body(b'{"status": "active"}', charge_ok=True),
    "wrong-types": Body(
        b'{"status": 5, "session_token": 7, "charge_id": 5, "amount_tokens": "many"}',
        charge_ok=True,
    ),
    # README: results are read from the body; a Content-Type that says otherwise is not trusted
    # either way, so valid JSON labelled text/html is accepted (and HTML labelled JSON is not).
    "json-labelled-text-html": Body(
        b'{"status": "active", "session_token": "t", "charge_id": "ch_1"}',
        status_ok=True,
        charge_ok=True,
        content_type="text/html; charset=utf-8",
    ),
    "json-without-content-type": Body(
        b'{"status": "active", "session_token": "t", "charge_id": "ch_1"}',
        status_ok=True,
        charge_ok=True,
        content_type=None,
    ),
    "html-labelled-json": Body(b"<html>oops</html>"),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", BODIES)
async def test_2xx_body_is_parsed_by_its_content_and_a_bad_one_is_one_validation_error(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str, name: str
) -> None:
    body = BODIES[name]
    rogue = rogue_factory(Reply(200, body.content, content_type=body.content_type))
    outcome = await run(call(clients.make(rogue.url), endpoint))
    accepted = body.status_ok if endpoint == "status" else body.charge_ok
    assert rogue.count == 1  # an unreadable 2xx is never retried
    assert outcome.elapsed < SLACK
    if accepted:
        assert outcome.error is None, outcome.error
        assert outcome.result is not None
        assert outcome.result.to_json()  # the dict view holds what was sent
        return
    error = outcome.error
    assert type(error) is ResponseValidationError
    assert error.status_code == 200
    assert error.raw_body == body.content[: 64 * 1024]
    assert error.attempts == 1
    if endpoint == "charge":
        # A 2xx came back: the charge went through even though its answer is unreadable.
        assert error.may_have_been_applied is True
        assert error.idempotency_key == rogue.requests[0].header("Idempotency-Key")


def huge_body(total: int = 50 * MIB, size: int = 64 * 1024) -> Callable[[], Iterable[bytes]]:
    chunk = b" " * size  # whitespace: the start of a body a JSON parser would accept
    return lambda: (chunk for _ in range(total // size))


def _proc_status(field: str) -> int:
    """A size from /proc/self/status, in bytes."""
    found = re.search(rf"^{field}:\s+(\d+) kB$", Path("/proc/self/status").read_text(), re.M)
    assert found is not None
    return int(found.group(1)) * 1024


@dataclass
class Memory:
    """How much one call made this process allocate and hold at its peak."""

    outcome: Outcome
    traced_peak: int  # the peak of Python allocations during the call (tracemalloc)
    rss_growth: int | None  # the rise of the process's peak RSS (None off Linux)


async def measure(make_call: Callable[[], Awaitable[Any]]) -> Memory:
    """Run the call twice: once for the peak RSS, once under tracemalloc (which costs RSS)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak RSS restarts from now
        before: int | None = _proc_status("VmHWM")
    except OSError:
        before = None
    outcome = await run(make_call())
    rss_growth = None if before is None else _proc_status("VmHWM") - before
    tracemalloc.start()
    try:
        await run(make_call())
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return Memory(outcome, traced_peak, rss_growth)


def assert_bounded(memory: Memory, what: str) -> None:
    traced, rss = memory.traced_peak / MIB, (memory.rss_growth or 0) / MIB
    assert traced < 16, f"{traced:.1f} MiB allocated while reading {what}"
    assert rss < 25, f"the process's peak RSS grew by {rss:.1f} MiB while reading {what}"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_50_mib_body_is_refused_promptly_without_being_buffered(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str, framing: str
) -> None:
    length = 50 * MIB if framing == "content-length" else None
    rogue = rogue_factory(Stream(huge_body(), length=length, limit=10))
    twin = clients.make(rogue.url)
    memory = await measure(lambda: call(twin, endpoint))
    outcome, error = memory.outcome, memory.outcome.error
    assert type(error) is ResponseValidationError
    assert "exceeds" in error.message
    assert len(error.raw_body) == 64 * 1024
    assert error.attempts == 1
    assert rogue.count == 2  # one per measured call: an oversized 2xx is not retried
    assert outcome.elapsed < SLACK
    # 4 MiB is read, then the connection is closed: nowhere near 50 MiB is held or even sent.
    assert_bounded(memory, "a 50 MiB answer")
    assert rogue.wait_until(lambda: rogue.open_connections == 0)
    assert rogue.bytes_sent < 2 * 20 * MIB


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_gzip_bomb_is_refused_without_inflating_it(
    clients: Clients, rogue_factory: Callable[..., RogueServer], endpoint: str
) -> None:
    bomb = gzip_bomb(50 * MIB)
    rogue = rogue_factory(Reply(200, bomb, headers=[("Content-Encoding", "gzip")]))
    twin = clients.make(rogue.url)
    memory = await measure(lambda: call(twin, endpoint))
    assert type(memory.outcome.error) is ResponseValidationError
    assert_bounded(memory, f"a {len(bomb)} byte gzip answer")


# -- wait_for_session against a flapping status endpoint ---------------------------------------


def flapping(active_from: int | None = None) -> Callable[[Request, int], Action]:
    """503, pending, 503, pending, ... and active from request `active_from` on (if given)."""

    def behaviour(request: Request, number: int) -> Action:
        if active_from is not None and number >= active_from:
            return Reply(200, ACTIVE)
        return failing(503) if number % 2 else Reply(200, PENDING)

    return behaviour


@pytest.mark.parametrize("timeout", [None, 5.0])
async def test_wait_rides_out_a_status_endpoint_flapping_between_503_and_pending(
    clients: Clients, rogue_factory: Callable[..., RogueServer], timeout: float | None
) -> None:
    rogue = rogue_factory()
    rogue.behave(flapping(active_from=9))
    outcome = await run(
        clients.make(rogue.url).wait_for_session("user123", poll_interval=0.02, timeout=timeout)
    )
    assert isinstance(outcome.result, Session), outcome.error
    assert outcome.result.is_active
    assert outcome.result.session_token == TOKEN
    assert rogue.count == 9
    assert outcome.elapsed < 4 * 0.02 + sum(clients.sleeps) + SLACK


async def test_wait_with_a_timeout_on_an_endpoint_that_flaps_forever_ends_at_the_deadline(
    clients: Clients, rogue_factory: Callable[..., RogueServer]
) -> None:
    rogue = rogue_factory()
    rogue.behave(flapping())
    outcome = await run(
        clients.make(rogue.url).wait_for_session("user123", poll_interval=0.05, timeout=0.8)
    )
    error = outcome.error
    assert type(error) is SessionWaitTimeoutError
    assert isinstance(error, TimeoutError)
    assert 0.95 * 0.8 <= outcome.elapsed < 0.8 + SLACK
    assert rogue.count >= 4  # it kept polling through the flaps until the deadline


async def test_wait_with_a_timeout_on_a_stalled_endpoint_ends_at_the_deadline(
    clients: Clients, rogue_factory: Callable[..., RogueServer]
) -> None:
    """The read timeout is clamped to the time left: a stall cannot hold the wait past it."""
    rogue = rogue_factory(Stall(10))
    outcome = await run(
        clients.make(rogue.url).wait_for_session("user123", poll_interval=0.05, timeout=0.5)
    )
    assert type(outcome.error) is SessionWaitTimeoutError
    assert isinstance(outcome.error.__cause__, APITimeoutError)
    assert 0.95 * 0.5 <= outcome.elapsed < 0.5 + SLACK


@pytest.mark.parametrize("retry_after", [5.0, 0.25])
async def test_wait_with_a_timeout_never_polls_sooner_than_retry_after_asks(
    clients: Clients, rogue_factory: Callable[..., RogueServer], retry_after: float
) -> None:
    rogue = rogue_factory(failing(429, ("Retry-After", str(retry_after))))
    timeout = 0.6
    outcome = await run(
        clients.make(rogue.url).wait_for_session("user123", poll_interval=0.05, timeout=timeout)
    )
    assert isinstance(outcome.error, (SessionWaitTimeoutError, RateLimitError))
    assert outcome.elapsed < timeout + SLACK
    gaps = [b.at - a.at for a, b in itertools.pairwise(rogue.requests)]
    assert rogue.count <= 1 + timeout / retry_after, f"{rogue.count} polls in {timeout} s"
    assert all(gap >= 0.9 * retry_after for gap in gaps), gaps


async def test_wait_without_a_timeout_raises_a_persistent_503_once_retries_are_spent(
    clients: Clients, rogue_factory: Callable[..., RogueServer]
) -> None:
    rogue = rogue_factory(failing(503))
    outcome = await run(clients.make(rogue.url).wait_for_session("user123", poll_interval=0.02))
    assert type(outcome.error) is ServerError
    assert outcome.error.attempts == rogue.count == 3
    assert outcome.elapsed < sum(clients.sleeps) + SLACK


# -- cancelling the async wait --------------------------------------------------------------------


async def its_one_lane_is_free(provider: AsyncKNAIProvider) -> bool:
    """With max_connections=1: the next request gets the lane at once, not a pool timeout."""
    try:
        await provider.get_session("user123", timeout=httpx.Timeout(2.0, pool=0.2), max_retries=0)
    except APITimeoutError as exc:
        return "no free connection" not in str(exc)
    return True


async def cancel(task: asyncio.Task[Any]) -> float:
    """Cancel `task` and return how long it took to end (at most 2 s)."""
    started = time.monotonic()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert done == {task}, "the wait did not stop within 2 s of being cancelled"
    assert task.cancelled()
    return time.monotonic() - started


async def no_new_tasks(before: set[asyncio.Task[Any]]) -> None:
    await asyncio.sleep(0.05)  # let anything the cancellation scheduled run
    assert asyncio.all_tasks() - before == set(), "cancelling the wait left a task behind"


@pytest.mark.parametrize("timeout", [None, 30.0])
async def test_cancelling_the_async_wait_mid_sleep_leaves_no_task_or_connection_behind(
    rogue_factory: Callable[..., RogueServer], timeout: float | None
) -> None:
    rogue = rogue_factory(Reply(200, PENDING))
    before = asyncio.all_tasks()
    async with AsyncKNAIProvider(API_KEY, SLUG, rogue.url, max_connections=1) as provider:
        task = asyncio.create_task(
            provider.wait_for_session("user123", poll_interval=60, timeout=timeout)
        )
        assert await asyncio.to_thread(rogue.wait_until, lambda: rogue.count == 1)
        await asyncio.sleep(0.05)  # the poll was answered: the wait is in its 60 s pause
        assert await cancel(task) < 1.0
        await no_new_tasks(before)
        assert rogue.count == 1
        assert await its_one_lane_is_free(provider)
    assert rogue.count == 2
    assert rogue.connections == 1  # the paused wait's connection was kept alive and reused
    assert await asyncio.to_thread(rogue.wait_until, lambda: rogue.open_connections == 0)


@pytest.mark.parametrize("timeout", [None, 30.0])
async def test_cancelling_the_async_wait_mid_request_closes_the_connection(
    rogue_factory: Callable[..., RogueServer], timeout: float | None
) -> None:
    rogue = rogue_factory(Stall(10), Reply(200, ACTIVE))
    before = asyncio.all_tasks()
    async with AsyncKNAIProvider(API_KEY, SLUG, rogue.url, max_connections=1) as provider:
        task = asyncio.create_task(
            provider.wait_for_session("user123", poll_interval=0.05, timeout=timeout)
        )
        assert await asyncio.to_thread(rogue.wait_until, lambda: rogue.count == 1)
        assert await cancel(task) < 1.0
        await no_new_tasks(before)
        # The server saw the abandoned request's connection closed, while the client is open.
        assert await asyncio.to_thread(rogue.wait_until, lambda: rogue.hangups == 1)
        assert rogue.open_connections == 0
        # And the client still works, on its one lane.
        assert await its_one_lane_is_free(provider)
    assert rogue.count == 2


async def test_calls_stalled_on_one_async_client_cannot_hold_another_past_its_timeout(
    rogue_factory: Callable[..., RogueServer],
) -> None:
    """Eight calls hanging on a stalled server; a ninth still times out on its own budget."""
    rogue = rogue_factory(Stall(10))
    async with AsyncKNAIProvider(API_KEY, SLUG, rogue.url, max_retries=0) as provider:
        hanging = [
            asyncio.create_task(provider.get_session("user123", timeout=5.0)) for _ in range(8)
        ]
        try:
            assert await asyncio.to_thread(rogue.wait_until, lambda: rogue.count == 8)
            outcome = await run(provider.charge(TOKEN, 1500, "gpt-4", timeout=0.3))
        finally:
            for task in hanging:
                task.cancel()
            await asyncio.gather(*hanging, return_exceptions=True)
    assert type(outcome.error) is APITimeoutError
    assert outcome.elapsed < 0.3 + SLACK


async def test_cancelling_an_async_charge_mid_request_closes_the_connection(
    rogue_factory: Callable[..., RogueServer],
) -> None:
    rogue = rogue_factory(Stall(10), Reply(200, ACTIVE))
    before = asyncio.all_tasks()
    async with AsyncKNAIProvider(API_KEY, SLUG, rogue.url, max_connections=1) as provider:
        task = asyncio.create_task(provider.charge(TOKEN, 1500, "gpt-4"))
        assert await asyncio.to_thread(rogue.wait_until, lambda: rogue.count == 1)
        assert await cancel(task) < 1.0
        await no_new_tasks(before)
        assert await asyncio.to_thread(rogue.wait_until, lambda: rogue.hangups == 1)
        assert rogue.count == 1  # cancelled, not retried
        assert await its_one_lane_is_free(provider)
