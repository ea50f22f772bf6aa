"""Property tests: whatever comes back, and whatever a caller passes, nothing undocumented escapes.

(a) The response-parsing layer, fed any status, headers and bytes: the outcome is
a valid model or exactly the documented `KNAIError` subclass for the status,
never a KeyError, a json or pydantic error. Checked on the pure functions and
through both clients (respx, no retries).

(b) The public inputs, fed unicode, spaces, `& ? # %`, CR/LF, NUL, long values
and edge amounts: either a `ValueError` naming the argument before anything is
sent, or a request whose query string, JSON body and headers carry the value
exactly, checked on the raw bytes a loopback server received. Never an extra
header line.

Each property builds its own clients (no function-scoped fixtures) and keeps
`max_examples` modest so the file runs in seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import gzip
import json
import logging
import math
import re
import zlib
from collections.abc import Callable, Iterator
from datetime import timezone
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from knai import (
    AsyncKNAIProvider,
    ChargeResult,
    KNAIError,
    KNAIProvider,
    ResponseValidationError,
    Session,
)
from knai._core import Plan, call_steps
from knai._response import Body, error_from_response
from knai._retry import RetryPolicy, parse_retry_after
from knai._types import Call
from tests.conftest import API_KEY, SLUG, TOKEN
from tests.support.rogue import Reply, Request, RogueServer
from tests.support.statuses import error_for
from tests.support.twin import ACTIVE, CHARGE, CHARGED, STATUS

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BASE_URL = "https://api.conx.ai"

# -- (a) any answer in ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
PROTOCOL_FIELDS = [
    "status",
    "session_token",
    "session_id",
    "provider_username",
    "expires_at",
    "charge_id",
    "amount_tokens",
    "model",
    "remaining_balance",
    "created_at",
    "error",
    "message",
]
protocol_like = st.fixed_dictionaries(
    {},
    optional={
        name: json_values | st.sampled_from(["active", "pending", "2026-01-02T03:04:05Z", 5])
        for name in PROTOCOL_FIELDS
    },
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Raw bytes, or JSON (protocol-shaped or not) in one of the encodings JSON allows."""
    kind = draw(st.sampled_from(["bytes", "json", "protocol", "protocol"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    value = draw(json_values if kind == "json" else protocol_like)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "utf-32"]))
    return text.encode(encoding, "surrogatepass")


header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)
retry_afters = (
    header_text
    | st.integers(min_value=-(10**12), max_value=10**12).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.datetimes(timezones=st.just(timezone.utc)).map(
        lambda d: email.utils.format_datetime(d, usegmt=True)
    )
)


@st.composite
def header_lists(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """Headers as they come off the wire: latin-1 bytes, any printable value."""
    headers = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["Retry-After", "X-Request-Id", "Location", "Content-Type", "X-Anything"]
                ),
                header_text,
            ),
            max_size=4,
        )
    )
    if draw(st.booleans()):
        headers.append(("Retry-After", draw(retry_afters)))
    return [(name.encode(), value.encode("latin-1")) for name, value in headers]


statuses = st.integers(min_value=100, max_value=599) | st.sampled_from(
    [200, 201, 204, 301, 400, 401, 402, 403, 404, 408, 409, 410, 422, 429, 500, 502, 503, 504]
)


def expected_error(status: int) -> type[KNAIError]:
    """The one exception class the README documents for `status`."""
    if 200 <= status < 300:
        return ResponseValidationError
    return error_for(status)


def check_outcome(
    status: int, model: type[Session | ChargeResult], result: Any, error: BaseException | None
) -> None:
    """A valid model for a 2xx, else exactly the documented error; both print safely."""
    if error is None:
        assert 200 <= status < 300
        assert isinstance(result, model)
        if isinstance(result, Session):
            assert isinstance(result.status, str)
            assert not result.is_active or result.session_token
        str(result), repr(result), result.to_json(), result.to_dict()
        return
    assert isinstance(error, KNAIError), f"{type(error).__name__} escaped: {error!r}"
    assert type(error) is expected_error(status), f"{status} raised {type(error).__name__}"
    assert error.status_code == status
    if not 200 <= status < 300:
        assert len(error.message) <= 303  # a server's message is cut, an HTML page is no message
    assert error.retry_after is None or (
        not math.isnan(error.retry_after) and error.retry_after >= 0
    )
    str(error), repr(error)


def charge_call() -> Call:
    headers = {"X-Provider-API-Key": API_KEY, "X-Session-Token": TOKEN}
    return Call("POST", CHARGE, None, headers, b"{}", idempotency_key="k-1", secrets=(TOKEN,))


@FUZZ
@given(
    status=statuses,
    headers=header_lists(),
    body=bodies(),
    complete=st.booleans(),
    model=st.sampled_from([Session, ChargeResult]),
)
def test_parsing_any_answer_gives_a_model_or_the_documented_error(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    complete: bool,
    model: type[Session | ChargeResult],
) -> None:
    """The call core, fed one answer: the pure layer under both clients."""
    call = charge_call()
    request = httpx.Request(call.method, BASE_URL + call.path)
    response = httpx.Response(status, headers=headers, content=body, request=request)
    response.elapsed = datetime.timedelta(0)
    read = Body(until=None)
    read.raw, read.complete = bytearray(body), complete
    result, error = None, None
    steps = call_steps(call, lambda: model, Plan(RetryPolicy(), httpx.Timeout(5.0), max_retries=0))
    next(steps)  # the core asks for the request to be sent
    try:
        steps.send((response, read))
    except StopIteration as done:
        result = done.value
    except Exception as exc:
        error = exc
    check_outcome(status, model, result, error)


@FUZZ
@given(status=statuses, headers=header_lists(), body=bodies())
def test_error_mapping_of_any_answer_is_total(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    error = error_from_response(charge_call(), status, httpx.Headers(headers), body)
    assert isinstance(error, KNAIError)
    assert TOKEN not in str(error)
    str(error), repr(error)


@FUZZ
@given(value=retry_afters)
def test_retry_after_of_any_header_is_none_or_a_finite_non_negative_delay(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@settings(FUZZ, max_examples=80)
@given(
    status=statuses,
    headers=header_lists(),
    body=bodies(),
    endpoint=st.sampled_from(["status", "charge"]),
    flavour=st.sampled_from(["sync", "async"]),
    encoding=st.sampled_from([None, None, "gzip", "deflate", "identity", "x-unknown"]),
)
@example(200, [], b'{"status": "active", "session_token": "t"}', "status", "async", "gzip")
@example(503, [], b'{"error": "down"}', "charge", "sync", "deflate")
def test_both_clients_turn_any_answer_into_a_model_or_the_documented_error(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    endpoint: str,
    flavour: str,
    encoding: str | None,
) -> None:
    """The same, through a client's whole stack: streaming, size cap, decoding, logging."""
    if encoding is not None:
        headers = [*headers, (b"Content-Encoding", encoding.encode())]
        body = ENCODERS.get(encoding, bytes)(body)
    knai_log = logging.getLogger("knai")
    level = knai_log.level
    knai_log.setLevel(logging.DEBUG)  # the debug line formats every answer too
    try:
        with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
            answer = httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))
            router.route().mock(return_value=answer)
            result, error = _call(endpoint, flavour)
    finally:
        knai_log.setLevel(level)
    check_outcome(status, Session if endpoint == "status" else ChargeResult, result, error)


ENCODERS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "deflate": zlib.compress}


@pytest.mark.parametrize("status", [200, 401, 402, 503])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_an_answer_with_a_corrupt_content_encoding_keeps_its_status_and_class(
    status: int, flavour: str
) -> None:
    """Over a real socket (respx decodes mocked bodies itself, before the SDK sees them)."""
    garbled = Reply(status, b"\x1f\x8b\x08 not really gzip", headers=[("Content-Encoding", "gzip")])
    with RogueServer(garbled, garbled) as wire:
        result, error = _call("charge", flavour, base_url=wire.url)
    check_outcome(status, ChargeResult, result, error)


def _call(
    endpoint: str, flavour: str, base_url: str | None = None
) -> tuple[Any, BaseException | None]:
    async def asyncly() -> Any:
        async with AsyncKNAIProvider(API_KEY, SLUG, base_url, max_retries=0) as provider:
            if endpoint == "status":
                return await provider.get_session("user123")
            return await provider.charge(TOKEN, 1500, "gpt-4")

    def sync() -> Any:
        with KNAIProvider(API_KEY, SLUG, base_url, max_retries=0) as provider:
            if endpoint == "status":
                return provider.get_session("user123")
            return provider.charge(TOKEN, 1500, "gpt-4")

    try:
        return (asyncio.run(asyncly()) if flavour == "async" else sync()), None
    except Exception as exc:
        return None, exc


# -- (b) any input out -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wire() -> Iterator[RogueServer]:
    """One loopback server for the module: answers each endpoint, keeps the raw requests."""

    def answer(request: Request, number: int) -> Reply:
        return Reply(200, ACTIVE if request.path == STATUS else CHARGED)

    with RogueServer() as server:
        server.behave(answer)
        yield server


HEADER_LINE = re.compile(rb"[A-Za-z0-9-]+: [\x20-\x7e]*")
BASE_HEADERS = {
    "host",
    "accept",
    "accept-encoding",
    "connection",
    "user-agent",
    "content-type",
    "x-provider-api-key",
    "x-provider-slug",
}
CHARGE_HEADERS = BASE_HEADERS | {"content-length", "x-session-token", "idempotency-key"}


def check_head(request: Request, names: set[str]) -> None:
    """The request line and header block are well formed, with exactly the expected headers."""
    lines = request.head[:-4].split(b"\r\n")
    assert b"\n" not in request.head[:-4].replace(b"\r\n", b"")
    assert b"\r" not in request.head[:-4].replace(b"\r\n", b"")
    assert re.fullmatch(rb"(GET|POST) /[\x21-\x7e]* HTTP/1\.1", lines[0]), lines[0][:200]
    for line in lines[1:]:
        assert HEADER_LINE.fullmatch(line), line[:200]
    assert {name.lower() for name, _ in request.headers} == names
    assert len(request.headers) == len(names)


def sent(server: RogueServer, before: int) -> Request | None:
    """The one request sent since `before` requests, or None if nothing was sent."""
    assert server.count in (before, before + 1)
    return server.requests[-1] if server.count == before + 1 else None


ODD = list(" &?#%+=;/\\\r\n\t\x00\x7f\u2028")
odd_text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(ODD), max_size=40)
long_text = st.builds(
    lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(min_value=500, max_value=3000)
)


@settings(FUZZ, max_examples=150)
@given(username=odd_text | long_text)
@example("user 123&admin=1#frag?x=%41\r\nX-Injected: 1")
@example("\x00")
@example(" ")
def test_any_username_is_refused_or_sent_exactly_in_the_query(
    wire: RogueServer, username: str
) -> None:
    before = wire.count
    refusal: ValueError | None = None
    with KNAIProvider(API_KEY, SLUG, wire.url, max_retries=0) as provider:
        try:
            provider.get_session(username)
        except ValueError as exc:
            refusal = exc
    if refusal is not None:
        event("refused")
        assert "provider_username" in str(refusal)
        assert sent(wire, before) is None, "a refused username was sent"
        assert username == "" or "\x00" in username or len(username) > 1024
        return
    event("sent")
    request = sent(wire, before)
    assert request is not None
    assert request.path == STATUS
    assert request.query == [("provider_username", username)]
    check_head(request, BASE_HEADERS)


# Valid values are drawn as often as invalid ones, so both halves of each property run.
valid_amounts = st.integers(min_value=1, max_value=2**63 - 1) | st.sampled_from([1, 2**63 - 1])
amounts = st.one_of(
    valid_amounts,
    valid_amounts,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63, 2**64, True, False, 1.0, 5.5, "5", b"5", None, [5], 5j]),
    st.floats(allow_nan=True),
)
valid_tokens = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)
tokens = st.one_of(valid_tokens, valid_tokens, valid_tokens, odd_text, long_text)
keys = st.one_of(st.none(), valid_tokens.map(lambda k: k[:255]), tokens)
models = odd_text | long_text


@st.composite
def charge_inputs(draw: st.DrawFn) -> tuple[Any, Any, Any, Any]:
    """(token, amount, model, key): at most one drawn from anything, the rest drawn valid."""
    wild = draw(st.sampled_from([None, "token", "amount", "model", "key"]))
    return (
        draw(tokens if wild == "token" else valid_tokens),
        draw(amounts if wild == "amount" else valid_amounts),
        draw(models if wild == "model" else models.filter(valid_model)),
        draw(keys if wild == "key" else st.none() | valid_tokens.map(lambda k: k[:255])),
    )


def valid_token(value: str) -> bool:
    return bool(value) and all(33 <= ord(c) <= 126 for c in value)


def valid_model(value: Any) -> bool:
    """A model name: non-empty text without whitespace or control characters."""
    try:
        value.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):
        return False
    return bool(value) and not any(c.isspace() or not c.isprintable() for c in value)


@settings(FUZZ, max_examples=200)
@given(inputs=charge_inputs())
@example((TOKEN, 2**63 - 1, "gpt-4", None))
@example((TOKEN, 2**63, "gpt-4", None))
@example((TOKEN, 0, "gpt-4", None))
@example((TOKEN, True, "gpt-4", None))
@example((TOKEN, 1.0, "gpt-4", None))
@example((TOKEN, "5", "gpt-4", None))
@example(("tok\r\nX-Injected: 1", 5, "gpt-4", None))
@example((TOKEN, 5, "gpt-4\r\nX-Injected: 1", "key\r\nX-Injected: 1"))
@example((TOKEN, 5, "gpt\x00-4 ✓ & ? # %", "k" * 256))
def test_any_charge_input_is_refused_or_sent_exactly(
    wire: RogueServer, inputs: tuple[Any, Any, Any, Any]
) -> None:
    token, amount, model, key = inputs
    amount_ok = type(amount) is int and 1 <= amount <= 2**63 - 1
    model_ok = valid_model(model)
    key_ok = key is None or (valid_token(key) and len(key) <= 255)
    valid = valid_token(token) and amount_ok and model_ok and key_ok
    before = wire.count
    refusal: ValueError | None = None
    with KNAIProvider(API_KEY, SLUG, wire.url, max_retries=0) as provider:
        try:
            provider.charge(token, amount, model, idempotency_key=key)
        except ValueError as exc:
            refusal = exc
    if refusal is not None:
        message = str(refusal)
        event(f"refused: {message.split()[0]}")
        assert sent(wire, before) is None, "refused input was sent"
        assert not valid, f"valid input refused: {message}"
        names = ("session_token", "amount_tokens", "model", "idempotency_key")
        assert any(name in message for name in names), message
        if len(token) >= 8 and token not in repr((model, amount, key)):
            assert token not in message, "the session token was echoed"
        return
    event("sent")
    assert valid, "invalid input was sent"
    request = sent(wire, before)
    assert request is not None
    assert request.path == CHARGE
    body = request.json()
    assert body == {"amount_tokens": amount, "model": model}
    assert type(body["amount_tokens"]) is int
    assert request.header("X-Session-Token") == token
    if key is not None:
        assert request.header("Idempotency-Key") == key
    check_head(request, CHARGE_HEADERS)


# -- inputs found to escape ------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_username_too_long_for_a_url_is_a_value_error_naming_it(
    wire: RogueServer, flavour: str
) -> None:
    before = wire.count
    with pytest.raises(ValueError, match="provider_username"):
        _get_session(wire.url, flavour, "u" * 70_000)
    assert wire.count == before


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_username_that_is_not_encodable_is_a_value_error_naming_it(
    wire: RogueServer, flavour: str
) -> None:
    before = wire.count
    with pytest.raises(ValueError, match="provider_username"):
        _get_session(wire.url, flavour, "user\ud800")
    assert wire.count == before


def _get_session(url: str, flavour: str, username: str) -> Session:
    async def asyncly() -> Session:
        async with AsyncKNAIProvider(API_KEY, SLUG, url, max_retries=0) as provider:
            return await provider.get_session(username)

    if flavour == "async":
        return asyncio.run(asyncly())
    with KNAIProvider(API_KEY, SLUG, url, max_retries=0) as provider:
        return provider.get_session(username)
