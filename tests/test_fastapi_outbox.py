"""A `Paywall` whose wallets charge through an `AsyncOutbox`, over uvicorn and the sandbox.

(No `from __future__ import annotations`: FastAPI reads the handlers' annotations.)

The app's outbox only stores (its sender is not started in the server); the
test then drains the same SQLite file with an `Outbox` of its own, as a
restarted process would. What is checked: the answers, and that the
sandbox ledger holds each charge once, under the inline path's keys.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header
from fastapi.responses import StreamingResponse

from knai import AsyncKNAIProvider, KNAIProvider
from knai.fastapi import Paywall, Wallet
from knai.metering import Price, PriceTable
from knai.outbox import AsyncOutbox, Outbox, OutboxEntry
from knai.sessions import AsyncSessionCache
from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, RunningSandbox
from knai.testing._serve_asgi import serve_asgi
from knai.testing.pytest_plugin import quick_retries
from tests.test_fastapi import MODEL, Service, chunk, usage_chunk


class Served:
    """The app over loopback, its store, and the sandbox."""

    def __init__(self, service: Service, store: Path) -> None:
        self.service = service
        self.store = store

    def drain(self) -> list[OutboxEntry]:
        """Deliver what the app stored, from a fresh outbox on the same file; the dead list."""
        with KNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, self.service.sandbox.url) as provider:
            quick_retries(provider)
            with Outbox(provider, self.store, poll_interval=0.05) as outbox:
                assert outbox.drain(10)
                return outbox.dead()


def build_app(store: Path, provider: AsyncKNAIProvider) -> FastAPI:
    async def username_of(x_user: Annotated[str, Header()]) -> str:
        return x_user

    outbox = AsyncOutbox(provider, store)
    gate = Paywall(
        AsyncSessionCache(provider),
        username_of,
        prices=PriceTable({MODEL: Price(1, 2)}),
        request_id_header="X-Request-Id",
        outbox=outbox,
    )
    app = FastAPI()

    @app.post("/charge")
    async def charge(
        wallet: Annotated[Wallet[OutboxEntry], Depends(gate)], amount: int = 100
    ) -> Any:
        entry = await wallet.charge(amount, MODEL)
        return {"key": entry.idempotency_key, "state": entry.state, "charged": wallet.charged}

    @app.post("/usage")
    async def usage(wallet: Annotated[Wallet[OutboxEntry], Depends(gate)]) -> Any:
        entry = await wallet.charge_usage(usage_chunk(10, 20))
        assert entry is not None
        return {"key": entry.idempotency_key, "charged": wallet.charged}

    async def upstream() -> Any:
        for n in range(5):
            yield chunk(f"w{n} ")
        yield usage_chunk(3, 5)

    @app.post("/stream")
    async def stream(wallet: Annotated[Wallet[OutboxEntry], Depends(gate)]) -> StreamingResponse:
        events = wallet.stream(upstream(), model=MODEL, step=4)
        return StreamingResponse(events, media_type="text/event-stream")

    return app


@pytest.fixture
def served(knai_sandbox_server: RunningSandbox, tmp_path: Path) -> Iterator[Served]:
    provider = AsyncKNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, base_url=knai_sandbox_server.url)
    quick_retries(provider)
    store = tmp_path / "outbox.db"
    service = Service(url="", sandbox=knai_sandbox_server)
    with serve_asgi(build_app(store, provider)) as url:
        service.url = url
        yield Served(service, store)


def post(served: Served, path: str, user: str, request_id: str) -> httpx.Response:
    headers = {"X-User": user, "X-Request-Id": request_id}
    return httpx.post(served.service.url + path, headers=headers, timeout=10)


def test_wallet_charges_are_stored_then_land_once_under_the_request_keys(served: Served) -> None:
    user = served.service.user()
    answer = post(served, "/charge", user, "req-7")
    assert answer.status_code == 200
    body = answer.json()
    assert body["state"] == "pending"
    assert body["charged"] == 100
    assert body["key"].endswith("-req-7:1")
    assert post(served, "/charge", user, "req-7").json() == body  # a retry: the same entry
    usage = post(served, "/usage", user, "req-8").json()
    assert usage == {"key": usage["key"], "charged": 10 + 20 * 2}
    assert served.service.ledger(user) == 0  # stored, not yet sent
    assert served.drain() == []
    assert sorted(served.service.keys(user)) == sorted([body["key"], usage["key"]])
    assert served.service.ledger(user) == 100 + 50


def test_a_wallet_stream_stores_increments_and_settlement_then_lands_once(served: Served) -> None:
    user = served.service.user()
    answer = post(served, "/stream", user, "req-9")
    assert answer.status_code == 200
    assert answer.text.rstrip().endswith("data: [DONE]")
    served.drain()
    keys = served.service.keys(user)
    base = next(k for k in keys if k.endswith(":final")).removesuffix(":final")
    assert base.endswith("-req-9:1")
    assert sorted(keys) == sorted([f"{base}:1", f"{base}:2", f"{base}:final"])
    assert served.service.ledger(user) == 3 * 1 + 5 * 2


def test_an_outbox_wallet_answers_200_and_a_refusal_lands_in_the_dead_list(
    served: Served,
) -> None:
    """Deferred delivery: the wallet's 402 comes after the answer, to the dead list."""
    user = served.service.user(balance=50)
    assert post(served, "/charge", user, "req-10").status_code == 200
    dead = served.drain()
    assert served.service.ledger(user) == 0
    assert [e.amount_tokens for e in dead] == [100]
    assert dead[0].error is not None
    assert dead[0].error.status_code == 402
