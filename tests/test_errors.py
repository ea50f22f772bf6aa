"""The exception tree: 0.1.0's contract, the drawn hierarchy, and status -> exception end to end."""

from __future__ import annotations

import inspect
import pickle
import re
from typing import Any

import pytest
import respx

import knai._errors
from knai import (
    APIConnectionError,
    APITimeoutError,
    AsyncKNAIProvider,
    InsufficientBalanceError,
    InvalidAPIKeyError,
    KNAIError,
    KNAIProvider,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    SessionExpiredError,
    SessionWaitTimeoutError,
)
from tests.conftest import BASE_URL, TOKEN

STATUS_PATH = "/providers/session/status"
CHARGE_PATH = "/charge/authorize"

# -- the 0.1.0 contract -------------------------------------------------------

OLD_DEFAULTS = [
    (InvalidAPIKeyError, "Invalid API key"),
    (InsufficientBalanceError, "Insufficient wallet balance"),
    (SessionExpiredError, "Session has expired"),
    (KNAIError, "Unknown error"),
]


@pytest.mark.parametrize(("cls", "default"), OLD_DEFAULTS)
def test_default_message_when_none_is_given(cls: type[KNAIError], default: str) -> None:
    exc = cls()
    assert exc.message == default
    assert str(exc) == default
    assert exc.status_code is None
    assert exc.response_body is None
    assert isinstance(exc, KNAIError)


@pytest.mark.parametrize(("cls", "default"), OLD_DEFAULTS)
def test_constructed_with_010_keywords(cls: type[KNAIError], default: str) -> None:
    exc = cls(message="x", status_code=403, response_body={})
    assert (exc.message, exc.status_code, exc.response_body) == ("x", 403, {})
    assert str(exc) == "x (HTTP 403)"
    assert exc.args == ("x",)


def test_constructed_positionally_like_010() -> None:
    exc = InsufficientBalanceError("low", 402, {"error": "low"})
    assert (exc.message, exc.status_code, exc.response_body) == ("low", 402, {"error": "low"})
    assert str(exc) == "low (HTTP 402)"


def test_message_only_error_str_is_just_the_message() -> None:
    exc = KNAIError("m")
    assert str(exc) == "m"
    assert exc.message == "m"
    assert exc.status_code is None


def test_may_have_been_applied_adds_a_replay_hint_to_str() -> None:
    plain = ServerError("boom", 502)
    ambiguous = ServerError("boom", 502, idempotency_key="k1", may_have_been_applied=True)
    assert str(plain) == "boom (HTTP 502)"
    assert str(ambiguous).startswith("boom (HTTP 502)")
    assert "idempotency_key" in str(ambiguous)
    assert ambiguous.message == "boom"


def test_repr_shows_class_and_message_but_not_body_or_headers() -> None:
    exc = SessionExpiredError(
        "gone",
        410,
        {"error": "gone", "session_token": TOKEN},
        request_id="req_secretless",
        headers={"X-Request-Id": "req_secretless"},
        idempotency_key="idem_123",
    )
    text = repr(exc)
    assert text.startswith("SessionExpiredError(")
    assert "'gone'" in text
    for hidden in (TOKEN, "session_token", "req_secretless", "idem_123"):
        assert hidden not in text


@pytest.mark.parametrize(
    "exc",
    [
        SessionExpiredError("gone", 403, {"error": "gone"}, request_id="r1"),
        ServerError("boom", 503, idempotency_key="k1", may_have_been_applied=True),
        ResponseValidationError("bad", 200, raw_body=b"<html>"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_errors_survive_pickling(exc: KNAIError) -> None:
    """Errors cross process boundaries (multiprocessing, task queues) intact."""
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert vars(copy) == vars(exc)


# -- the tree drawn in the module docstring is the real one -------------------

_TREE_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w+)(?P<rest>.*)$")


def _drawn_tree() -> list[tuple[str, str | None, str]]:
    """(name, drawn parent, annotation) for every class drawn in the docstring."""
    doc = knai._errors.__doc__ or ""
    lines = doc.split("::", 1)[1].splitlines()
    drawn: list[tuple[str, str | None, str]] = []
    stack: list[tuple[int, str]] = []
    for line in lines:
        if not line.strip():
            if drawn:
                break
            continue
        match = _TREE_LINE.match(line)
        if match is None:
            continue  # a continuation note such as "(also a built-in TimeoutError)"
        column = len(match["indent"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        drawn.append((match["name"], stack[-1][1] if stack else None, match["rest"].strip()))
        stack.append((column, match["name"]))
    return drawn


def test_docstring_draws_every_exception_exactly_once() -> None:
    names = [name for name, _, _ in _drawn_tree()]
    assert len(names) == len(set(names))
    assert set(names) == set(knai._errors.__all__)


@pytest.mark.parametrize(("name", "parent", "note"), _drawn_tree())
def test_drawn_parent_is_the_real_base_class(name: str, parent: str | None, note: str) -> None:
    cls = getattr(knai._errors, name)
    if parent is None:
        assert cls is KNAIError
    else:
        assert getattr(knai._errors, parent) in cls.__bases__


def test_hierarchy_relations() -> None:
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(APIConnectionError, KNAIError)
    assert issubclass(SessionWaitTimeoutError, TimeoutError)
    assert issubclass(SessionWaitTimeoutError, KNAIError)
    assert issubclass(KNAIError, Exception)
    for name in knai._errors.__all__:
        assert issubclass(getattr(knai._errors, name), KNAIError), name
    assert "TimeoutError" in (knai._errors.__doc__ or "").split("SessionWaitTimeoutError")[1]


def _drawn_statuses() -> list[tuple[int, str]]:
    pairs = []
    for name, _, note in _drawn_tree():
        for token in re.findall(r"\b(\d{3}|\dxx)\b", note):
            codes = [int(token)] if token.isdigit() else [int(token[0]) * 100, 599]
            pairs += [(code, name) for code in codes]
    return pairs


def test_docstring_draws_status_codes() -> None:
    assert {code for code, _ in _drawn_statuses()} >= {401, 402, 403, 410, 429, 500}


@pytest.mark.parametrize(("status", "name"), _drawn_statuses())
def test_status_drawn_next_to_a_class_raises_it(
    client: KNAIProvider, api: respx.MockRouter, status: int, name: str
) -> None:
    api.get(STATUS_PATH).respond(status, json={})
    with pytest.raises(KNAIError) as info:
        client.get_session("user123", max_retries=0)
    assert type(info.value) is getattr(knai._errors, name)


# -- status -> exception, end to end ------------------------------------------

STATUS_TABLE = [
    (401, InvalidAPIKeyError, "Invalid API key"),
    (402, InsufficientBalanceError, "Insufficient wallet balance"),
    (403, SessionExpiredError, "Session has expired"),
    (410, SessionExpiredError, "Session has expired"),
    (429, RateLimitError, RateLimitError.default_message),
    (500, ServerError, ServerError.default_message),
    (502, ServerError, ServerError.default_message),
    (503, ServerError, ServerError.default_message),
    (504, ServerError, ServerError.default_message),
    (400, KNAIError, "Unknown error"),
    (404, KNAIError, "Unknown error"),
    (409, KNAIError, "Unknown error"),
    (422, KNAIError, "Unknown error"),
]


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["session", "charge"])
def endpoint(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _failing_call(
    flavor: str,
    endpoint: str,
    client: KNAIProvider,
    aclient: AsyncKNAIProvider,
    **kwargs: Any,
) -> KNAIError:
    """Make one call with retries off; return the KNAIError it raised."""

    async def call() -> object:
        if endpoint == "session":
            if flavor == "sync":
                return client.get_session("user123", max_retries=0)
            return await aclient.get_session("user123", max_retries=0)
        if flavor == "sync":
            return client.charge(TOKEN, 1500, "gpt-4", max_retries=0, **kwargs)
        return await aclient.charge(TOKEN, 1500, "gpt-4", max_retries=0, **kwargs)

    with pytest.raises(KNAIError) as info:
        await call()
    return info.value


def _route(api: respx.MockRouter, endpoint: str) -> respx.Route:
    return api.get(STATUS_PATH) if endpoint == "session" else api.post(CHARGE_PATH)


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "cls", "default"), STATUS_TABLE)
async def test_status_raises_its_exception_with_body_error_message(
    client: KNAIProvider,
    aclient: AsyncKNAIProvider,
    api: respx.MockRouter,
    sleeps: list[float],
    flavor: str,
    endpoint: str,
    status: int,
    cls: type[KNAIError],
    default: str,
) -> None:
    body = {"error": "the wallet says no", "code": "E42"}
    route = _route(api, endpoint).respond(status, json=body, headers={"X-Request-Id": "req_7"})
    exc = await _failing_call(flavor, endpoint, client, aclient)
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.message == "the wallet says no"
    assert exc.response_body == body
    assert exc.request_id == "req_7"
    assert str(exc).startswith(f"the wallet says no (HTTP {status})")
    assert route.call_count == 1
    assert sleeps == []
    if endpoint == "charge":
        assert exc.idempotency_key == route.calls.last.request.headers["Idempotency-Key"]
        assert exc.may_have_been_applied is (status >= 500)
    else:
        assert str(exc) == f"the wallet says no (HTTP {status})"
        assert exc.idempotency_key is None


# One status per class: the message rule does not depend on the code within a class.
ONE_PER_CLASS = [row for row in STATUS_TABLE if row[0] in {401, 402, 410, 429, 503, 422}]


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "cls", "default"), ONE_PER_CLASS)
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": "from error", "message": "from message"}, "from error"),
        ({"message": "from message"}, "from message"),
        ({"error": "", "message": "from message"}, "from message"),
        ({"detail": "neither field"}, None),
        ({}, None),
    ],
    ids=["error-wins", "message", "empty-error", "other-field", "empty"],
)
async def test_message_from_error_else_message_else_default(
    client: KNAIProvider,
    aclient: AsyncKNAIProvider,
    api: respx.MockRouter,
    flavor: str,
    status: int,
    cls: type[KNAIError],
    default: str,
    body: dict[str, str],
    expected: str | None,
) -> None:
    api.get(STATUS_PATH).respond(status, json=body)
    exc = await _failing_call(flavor, "session", client, aclient)
    assert type(exc) is cls
    assert exc.message == (expected or default)
    assert exc.response_body == body
    assert exc.request_id is None  # no X-Request-Id header was sent


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "text"),
    [(502, "Bad Gateway"), (404, "<html><body>Not Found</body></html>"), (401, "nope")],
)
async def test_non_json_error_body_becomes_error_field(
    client: KNAIProvider,
    aclient: AsyncKNAIProvider,
    api: respx.MockRouter,
    flavor: str,
    endpoint: str,
    status: int,
    text: str,
) -> None:
    _route(api, endpoint).respond(status, text=text, headers={"Content-Type": "text/html"})
    exc = await _failing_call(flavor, endpoint, client, aclient)
    assert exc.status_code == status
    assert exc.response_body == {"error": text}
    assert exc.message == text


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 307])
async def test_redirect_is_not_followed(
    client: KNAIProvider,
    aclient: AsyncKNAIProvider,
    api: respx.MockRouter,
    flavor: str,
    endpoint: str,
    status: int,
) -> None:
    elsewhere = api.route(path="/elsewhere").respond(200, json={"status": "pending"})
    route = _route(api, endpoint).respond(status, headers={"Location": f"{BASE_URL}/elsewhere"})
    exc = await _failing_call(flavor, endpoint, client, aclient)
    assert type(exc) is KNAIError
    assert exc.status_code == status
    assert "redirect" in exc.message
    assert route.call_count == 1
    assert elsewhere.call_count == 0


@pytest.mark.anyio
async def test_charge_error_carries_the_callers_idempotency_key(
    client: KNAIProvider, aclient: AsyncKNAIProvider, api: respx.MockRouter, flavor: str
) -> None:
    route = api.post(CHARGE_PATH).respond(402, json={"error": "balance too low"})
    exc = await _failing_call(flavor, "charge", client, aclient, idempotency_key="order-42")
    assert type(exc) is InsufficientBalanceError
    assert exc.idempotency_key == "order-42"
    assert route.calls.last.request.headers["Idempotency-Key"] == "order-42"
    assert exc.may_have_been_applied is False
    assert str(exc) == "balance too low (HTTP 402)"


@pytest.mark.parametrize("name", knai._errors.__all__)
def test_every_error_has_an_explicit_signature(name: str) -> None:
    """No `*args, **kwargs`: IDEs and checkers see each argument and its type."""
    parameters = inspect.signature(getattr(knai._errors, name)).parameters.values()
    kinds = {p.kind for p in parameters}
    assert inspect.Parameter.VAR_POSITIONAL not in kinds
    assert inspect.Parameter.VAR_KEYWORD not in kinds
    assert all(p.annotation is not inspect.Parameter.empty for p in parameters)


def test_response_validation_error_takes_every_knai_error_field() -> None:
    error = knai.ResponseValidationError(
        "bad",
        200,
        {"status": 5},
        raw_body=b'{"status":5}',
        request_id="r1",
        headers={"x": "1"},
        idempotency_key="k",
        may_have_been_applied=True,
        attempts=2,
        retry_after=1.5,
    )
    assert (error.message, error.status_code, error.response_body) == ("bad", 200, {"status": 5})
    assert (error.raw_body, error.request_id, error.idempotency_key) == (b'{"status":5}', "r1", "k")
    assert (error.may_have_been_applied, error.attempts, error.retry_after) == (True, 2, 1.5)
    assert dict(error.headers or {}) == {"x": "1"}
