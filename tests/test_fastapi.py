"""knai.fastapi over a real uvicorn server on 127.0.0.1 and the sandbox wallet.

(No `from __future__ import annotations`: FastAPI reads the handlers' annotations,
which name dependencies local to `build_app`.)

A small app in each test uses the `Paywall` dependency the way a provider
would; an httpx client plays the end user. What is checked is what either of
them can see: status codes, JSON bodies, the SSE events as they arrive, and
the sandbox ledger.
"""

import asyncio
import json
import logging
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import StreamingResponse

from knai import AsyncKNAIProvider
from knai.fastapi import PaymentRefused, Paywall, Wallet
from knai.metering import Price, PriceTable
from knai.sessions import AsyncSessionCache
from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, RunningSandbox
from knai.testing._serve_asgi import serve_asgi
from knai.testing.pytest_plugin import quick_retries

MODEL = "test-model"


def chunk(text: str) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


@dataclass
class Service:
    """The test app served over loopback, and the knobs its upstream obeys."""

    url: str
    sandbox: RunningSandbox
    gate: threading.Event = field(default_factory=threading.Event)
    words: int = 5
    step: int = 1_000
    tokens: list[str] = field(default_factory=list)
    fail_at: int | None = None

    def user(self, balance: int = 10_000, *, session: bool = True) -> str:
        name = f"u-{secrets.token_hex(4)}"
        self.sandbox.admin.create_user(DEMO_PROVIDER_SLUG, name, balance=balance)
        if session:
            opened = self.sandbox.admin.open_session(DEMO_PROVIDER_SLUG, name)
            self.tokens.append(opened.session_token)
        return name

    def ledger(self, user: str) -> int:
        return sum(c.amount_tokens for c in self.sandbox.admin.charges(DEMO_PROVIDER_SLUG, user))

    def keys(self, user: str) -> list[str]:
        return [
            c.idempotency_key or "" for c in self.sandbox.admin.charges(DEMO_PROVIDER_SLUG, user)
        ]


def build_app(service: Service, provider: AsyncKNAIProvider, **paywall: Any) -> FastAPI:
    async def username_of(x_user: Annotated[str, Header()] = "") -> str:
        if not x_user:
            raise HTTPException(401, {"reason": "who are you"})
        return x_user

    prices = PriceTable({MODEL: Price(1, 2)})
    gate = Paywall(AsyncSessionCache(provider), username_of, prices=prices, **paywall)
    app = FastAPI()

    @app.post("/charge")
    async def charge(wallet: Annotated[Wallet, Depends(gate)], amount: int = 100) -> Any:
        result = await wallet.charge(amount, MODEL)
        return {
            "request_id": wallet.request_id,
            "charged": wallet.charged,
            "key": result.meta.idempotency_key,
        }

    @app.post("/usage")
    async def usage(wallet: Annotated[Wallet, Depends(gate)]) -> Any:
        await wallet.charge_usage(usage_chunk(10, 20))
        return {"charged": wallet.charged}

    async def upstream() -> AsyncIterator[dict[str, Any]]:
        for n in range(service.words):
            if n == service.fail_at:
                raise ConnectionError("the upstream went away")
            yield chunk(f"w{n} ")
            # The rest waits until the client has seen the first event; a
            # buffering server would never show it, and the stream would fail.
            if n == 0 and not await asyncio.to_thread(service.gate.wait, 5):
                raise RuntimeError("the client never saw the first event")
            await asyncio.sleep(0.01)
        yield usage_chunk(3, service.words)

    @app.post("/stream")
    async def stream(wallet: Annotated[Wallet, Depends(gate)]) -> StreamingResponse:
        events = wallet.stream(upstream(), model=MODEL, step=service.step)
        return StreamingResponse(events, media_type="text/event-stream")

    return app


@pytest.fixture
def service(knai_sandbox_server: RunningSandbox) -> Iterator[Service]:
    provider = AsyncKNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, base_url=knai_sandbox_server.url)
    quick_retries(provider)
    svc = Service(url="", sandbox=knai_sandbox_server)
    with serve_asgi(build_app(svc, provider, request_id_header="X-Request-Id")) as url:
        svc.url = url
        yield svc


def post(service: Service, path: str, user: str | None, **kwargs: Any) -> httpx.Response:
    headers = {"X-User": user} if user else {}
    headers.update(kwargs.pop("headers", {}))
    return httpx.post(service.url + path, headers=headers, timeout=10, **kwargs)


def events_of(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e]


def test_import_knai_does_not_load_fastapi() -> None:
    code = "import sys, knai; print('knai.fastapi' in sys.modules, 'fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_user_without_a_session_gets_402_naming_them_with_a_hint(service: Service) -> None:
    user = service.user(session=False)
    answer = post(service, "/charge", user)
    assert answer.status_code == 402
    detail = answer.json()["detail"]
    assert detail["reason"] == "no_active_session"
    assert detail["provider_username"] == user
    assert "open a KNAI Wallet session" in detail["hint"]
    assert DEMO_PROVIDER_SLUG in detail["hint"]
    assert service.ledger(user) == 0


def test_the_apps_own_authentication_answers_first(service: Service) -> None:
    """The username function is a FastAPI dependency: its 401 is the answer."""
    answer = post(service, "/charge", None)
    assert answer.status_code == 401


def test_charge_lands_once_with_a_key_from_the_request_id(service: Service) -> None:
    user = service.user()
    answer = post(service, "/charge", user, headers={"X-Request-Id": "req-42"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["charged"] == 100
    assert body["request_id"].endswith("-req-42")
    assert service.keys(user) == [f"{body['request_id']}:1"]
    # The same request id again (a client retry) is applied once.
    again = post(service, "/charge", user, headers={"X-Request-Id": "req-42"})
    assert again.status_code == 200
    assert service.ledger(user) == 100


def test_without_a_request_id_every_request_gets_a_fresh_key(service: Service) -> None:
    user = service.user()
    first = post(service, "/charge", user).json()["request_id"]
    second = post(service, "/charge", user).json()["request_id"]
    assert first != second
    assert service.ledger(user) == 200


def test_a_request_id_with_the_key_separator_is_replaced_by_a_fresh_one(service: Service) -> None:
    """Ids "r" and "r:1" could otherwise share keys ("r:1:1"): such an id is not trusted."""
    user = service.user()
    body = post(service, "/charge", user, headers={"X-Request-Id": "r:1"}).json()
    assert ":" not in body["request_id"]
    assert service.keys(user) == [f"{body['request_id']}:1"]


def test_the_same_request_id_of_two_users_charges_both(service: Service) -> None:
    alice, bob = service.user(), service.user()
    for user in (alice, bob):
        assert post(service, "/charge", user, headers={"X-Request-Id": "same"}).status_code == 200
    assert service.ledger(alice) == service.ledger(bob) == 100


def test_charge_usage_prices_the_response(service: Service) -> None:
    user = service.user()
    answer = post(service, "/usage", user)
    assert answer.json() == {"charged": 10 * 1 + 20 * 2}
    assert service.ledger(user) == 50


def test_insufficient_balance_before_the_response_is_402(service: Service) -> None:
    user = service.user(balance=50)
    answer = post(service, "/charge", user, params={"amount": 51})
    assert answer.status_code == 402
    assert answer.json()["detail"]["reason"] == "insufficient_balance"
    assert service.ledger(user) == 0


def test_an_expired_session_is_403_then_402(service: Service) -> None:
    user = service.user(session=False)
    opened = service.sandbox.admin.open_session(DEMO_PROVIDER_SLUG, user)
    assert post(service, "/charge", user).status_code == 200  # cached now
    service.sandbox.admin.expire_session(opened.session_id)
    refused = post(service, "/charge", user)
    assert refused.status_code == 403
    assert refused.json()["detail"]["reason"] == "session_expired"
    # The entry was dropped: the next request asks the wallet, which says why.
    assert post(service, "/charge", user).json()["detail"]["reason"] == "no_active_session"


def test_an_unreachable_wallet_is_503_not_a_traceback(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    user = service.user()
    service.sandbox.admin.inject_fault("status", status=503, times=20)
    with caplog.at_level(logging.DEBUG):
        answer = post(service, "/charge", user)
    service.sandbox.admin.clear_faults()
    assert answer.status_code == 503
    assert answer.json()["detail"]["reason"] == "wallet_unavailable"
    assert not [r for r in caplog.records if r.exc_info]


def test_a_stream_flows_event_by_event_and_is_charged_its_usage(service: Service) -> None:
    user = service.user()
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", service.url + "/stream", headers={"X-User": user}) as answer,
    ):
        assert answer.status_code == 200
        lines = answer.iter_lines()
        first = next(line for line in lines if line)
        # The upstream is still held at its first chunk: nothing was buffered.
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"] == "w0 "
        service.gate.set()
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert len(rest) == 6  # four more words, the usage chunk, [DONE]
    assert service.ledger(user) == 3 * 1 + 5 * 2


def test_a_refusal_mid_stream_ends_it_with_one_error_event(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """The balance covers the first increments only: the stream stops, the ledger holds
    exactly what the error event says was charged, and nothing is logged as an error."""
    service.gate.set()
    service.words, service.step = 40, 4
    user = service.user(balance=30)
    with caplog.at_level(logging.DEBUG):
        answer = post(service, "/stream", user)
    assert answer.status_code == 200
    events = events_of(answer.text)
    assert events[-1].startswith("event: error\ndata: ")
    error = json.loads(events[-1].split("data: ", 1)[1])["error"]
    assert error["type"] == "insufficient_balance"
    assert error["code"] == 402
    assert "data: [DONE]" not in events
    assert len(events) < 40
    assert 0 < error["charged"] == service.ledger(user) <= 30
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_no_secret_in_any_body_header_or_log_line(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service.gate.set()
    rich, poor, nobody = service.user(), service.user(balance=5), service.user(session=False)
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for user in (rich, poor, nobody):
            for path in ("/charge", "/usage", "/stream"):
                answer = post(service, path, user)
                seen.append(answer.text)
                seen.extend(f"{k}: {v}" for k, v in answer.headers.items())
        # A session that expired while cached (403), and an upstream that breaks.
        expiring = service.user(session=False)
        opened = service.sandbox.admin.open_session(DEMO_PROVIDER_SLUG, expiring)
        service.tokens.append(opened.session_token)
        seen.append(post(service, "/charge", expiring).text)
        service.sandbox.admin.expire_session(opened.session_id)
        seen.append(post(service, "/charge", expiring).text)
        service.fail_at = 1
        seen.append(post(service, "/stream", rich).text)
    seen.extend(r.getMessage() for r in caplog.records)
    seen.extend(repr(r.args) for r in caplog.records)
    everything = "\n".join(seen)
    assert "no_active_session" in everything
    assert "insufficient_balance" in everything
    assert "session_expired" in everything
    assert "upstream_error" in everything
    assert DEMO_API_KEY not in everything
    assert len(service.tokens) == 3
    for secret in service.tokens:
        assert secret
        assert secret not in everything


def test_paywall_rejects_what_is_not_a_session_cache() -> None:
    with pytest.raises(TypeError, match="sessions"):
        Paywall(object(), lambda: "x")  # type: ignore[arg-type]
    assert issubclass(PaymentRefused, HTTPException)


def wait_for_ledger(service: Service, user: str) -> int:
    """The ledger once a settlement running after the response has landed."""
    for _ in range(200):
        if service.ledger(user):
            return service.ledger(user)
        time.sleep(0.01)
    return service.ledger(user)


def test_an_upstream_that_breaks_mid_stream_ends_it_with_an_error_event(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """What was streamed is charged (a lower bound: one token per delta), the client
    gets one `upstream_error` event, and no traceback reaches the logs."""
    service.gate.set()
    service.fail_at = 3
    user = service.user()
    with caplog.at_level(logging.DEBUG):
        answer = post(service, "/stream", user)
    events = events_of(answer.text)
    assert len(events) == 4  # w0 w1 w2, then the error
    error = json.loads(events[-1].split("data: ", 1)[1])["error"]
    assert error["type"] == "upstream_error"
    assert error["charged"] == service.ledger(user) == 3 * 2  # 3 deltas at 2 per output token
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_client_that_hangs_up_mid_stream_is_charged_what_was_streamed(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service.gate.set()
    service.words = 200
    user = service.user()
    with (
        caplog.at_level(logging.DEBUG),
        httpx.Client(timeout=10) as client,
        client.stream("POST", service.url + "/stream", headers={"X-User": user}) as answer,
    ):
        next(line for line in answer.iter_lines() if line)
    charged = wait_for_ledger(service, user)
    assert 0 < charged < 3 + 200 * 2  # settled for the part streamed, not the whole answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_pending_session_is_waited_for_when_the_paywall_says_so(
    knai_sandbox_server: RunningSandbox,
) -> None:
    provider = AsyncKNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, base_url=knai_sandbox_server.url)
    svc = Service(url="", sandbox=knai_sandbox_server)
    user = svc.user(session=False)
    knai_sandbox_server.admin.open_session(DEMO_PROVIDER_SLUG, user, activate_after=0.3)
    with serve_asgi(build_app(svc, provider, wait=5)) as url:
        svc.url = url
        assert post(svc, "/charge", user).status_code == 200
    assert svc.ledger(user) == 100


def test_an_sdk_chunk_is_sent_as_the_json_the_sdk_reads_back() -> None:
    from openai.types.chat import ChatCompletionChunk

    from knai.fastapi import sse_event

    sent = ChatCompletionChunk.model_validate({**chunk("hi"), "created": 1})
    event = sse_event(sent)
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    assert ChatCompletionChunk.model_validate_json(event[6:-2]) == sent
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'
