"""An OpenAI-compatible chat endpoint that charges each caller's KNAI Wallet per usage."""

import hmac
import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from knai import AsyncKNAIProvider
from knai.fastapi import Paywall, Wallet
from knai.metering import PriceTable
from knai.sessions import AsyncSessionCache


def build_app(
    api_keys: Mapping[str, str],
    wallet: AsyncKNAIProvider,
    upstream: httpx.AsyncClient,
    prices: PriceTable | None = None,
) -> FastAPI:
    """The service: `api_keys` maps your API keys to provider_usernames."""

    def username_of(authorization: Annotated[str, Header()] = "") -> str:
        key = authorization.removeprefix("Bearer ")
        for known, user in api_keys.items():
            if hmac.compare_digest(key.encode(), known.encode()):
                return user
        raise HTTPException(401, {"reason": "invalid_api_key"})

    paywall = Paywall(AsyncSessionCache(wallet), username_of, prices=prices)
    app = FastAPI(title="paid chat")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request, wallet: Annotated[Wallet, Depends(paywall)]) -> Response:
        try:
            body: dict[str, Any] = dict(await request.json())
            model = str(body["model"])
        except (ValueError, TypeError, KeyError):
            raise HTTPException(400, {"reason": "a JSON object with a model is required"}) from None
        if not body.get("stream"):
            answer = await upstream.post("/chat/completions", json=body)
            if answer.is_error:
                return upstream_error(answer)
            completion = answer.json()
            await wallet.charge_usage(completion)  # a refusal answers 402/403
            return JSONResponse(completion)
        # Usage comes last in the stream, and only when asked for: always ask.
        body["stream_options"] = {"include_usage": True}
        sent = upstream.build_request("POST", "/chat/completions", json=body)
        answer = await upstream.send(sent, stream=True)
        if answer.is_error:
            await answer.aread()
            await answer.aclose()
            return upstream_error(answer)
        events = wallet.stream(chunks_of(answer), model=model)
        return StreamingResponse(events, media_type="text/event-stream")

    return app


def upstream_error(answer: httpx.Response) -> Response:
    """The upstream's refusal (a bad request, its rate limit) handed on as it came."""
    kind = answer.headers.get("content-type", "application/json")
    return Response(answer.content, status_code=answer.status_code, media_type=kind)


async def chunks_of(answer: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of an upstream's server-sent events, until ``[DONE]``."""
    try:
        async for line in answer.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line.removeprefix("data: "))
    finally:
        await answer.aclose()


def app_from_env() -> FastAPI:
    """The service configured from the environment (the README lists the variables)."""
    keys = dict(pair.split("=", 1) for pair in os.environ["PAID_CHAT_KEYS"].split(","))
    secret = os.environ.get("UPSTREAM_API_KEY", "unused")
    timeout = httpx.Timeout(60, connect=5)
    if "UPSTREAM_BASE_URL" in os.environ:
        upstream = httpx.AsyncClient(
            base_url=os.environ["UPSTREAM_BASE_URL"],
            headers={"Authorization": f"Bearer {secret}"},
            timeout=timeout,
        )
    else:  # a FakeLLM in this process: try the service without an LLM account
        from knai.testing import FakeLLM

        fake = FakeLLM()
        upstream = httpx.AsyncClient(
            base_url=fake.base_url, transport=fake.async_transport(), timeout=timeout
        )
    prices = os.environ.get("PRICES_FILE")  # TOML or JSON, see knai.metering
    return build_app(
        keys, AsyncKNAIProvider(), upstream, PriceTable.from_file(prices) if prices else None
    )
