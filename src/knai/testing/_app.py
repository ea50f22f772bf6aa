"""The sandbox wallet as an ASGI app: the KNAI provider protocol plus ``/_sandbox/`` admin.

    GET  /providers/session/status?provider_username=<name>
    POST /charge/authorize        {"amount_tokens": <int > 0>, "model": "<str>"}

Both authenticate with ``X-Provider-Slug`` + ``X-Provider-API-Key``; a charge
also needs ``X-Session-Token`` and may carry ``Idempotency-Key``. Every response
has an ``X-Request-Id: req_<hex>`` header and every error body is a JSON object
with an ``error`` string (except a scripted fault given a plain-text body).
Secrets are compared in constant time and never echoed or logged.

The middleware (outermost first): request ids, then scripted faults (see
``_faults``), then starlette's routing and the JSON error handlers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._admin_routes import admin_routes
from ._faults import Endpoint, Fault, FaultPlan
from ._http import ledger_of, read_json_object
from ._ledger import Ledger, SessionInfo

__all__ = ["create_app"]

logger = logging.getLogger("knai.testing")

STATUS_PATH = "/providers/session/status"
CHARGE_PATH = "/charge/authorize"
_ENDPOINT_OF_PATH: dict[str, Endpoint] = {STATUS_PATH: "status", CHARGE_PATH: "charge"}
_MAX_KEY_LENGTH = 255

# Set in the task that deliberately cut a connection, so the server can keep
# uvicorn's "returned without completing response" error for real bugs.
dropping_connection: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "knai_sandbox_dropping_connection", default=False
)


def create_app(ledger: Ledger) -> Starlette:
    """Build the sandbox wallet app over ``ledger`` (all state, faults included, lives there)."""
    app = Starlette(
        routes=[
            Route(STATUS_PATH, _session_status, methods=["GET"]),
            Route(CHARGE_PATH, _authorize_charge, methods=["POST"]),
            *admin_routes(),
        ],
        middleware=[
            Middleware(_RequestIdMiddleware),
            Middleware(_FaultMiddleware, faults=ledger.faults),
        ],
        exception_handlers={
            HTTPException: _http_error,
            ClientDisconnect: _client_gone,
            Exception: _server_error,
        },
    )
    app.state.ledger = ledger
    return app


# -- the provider protocol ------------------------------------------------------


def _authenticate(request: Request, ledger: Ledger) -> str:
    slug = request.headers.get("x-provider-slug", "")
    api_key = request.headers.get("x-provider-api-key", "")
    if not slug or not api_key or not ledger.authenticate(slug, api_key):
        raise HTTPException(401, "Invalid API key")
    return slug


async def _session_status(request: Request) -> Response:
    ledger = ledger_of(request)
    slug = _authenticate(request, ledger)
    username = request.query_params.get("provider_username", "")
    if not username:
        raise HTTPException(400, "provider_username is required")
    session = ledger.session_status(slug, username)
    body = _status_body(username, session)
    logger.debug("session status for %s/%s: %s", slug, username, body["status"])
    return JSONResponse(body)


def _status_body(username: str, session: SessionInfo | None) -> dict[str, Any]:
    if session is None:
        return {"status": "inactive", "provider_username": username}
    body: dict[str, Any] = {"status": session.status}
    if session.status == "active":
        body["session_token"] = session.session_token
    body.update(
        session_id=session.session_id,
        provider_username=session.provider_username,
        expires_at=session.expires_at,
    )
    return body


async def _authorize_charge(request: Request) -> Response:
    ledger = ledger_of(request)
    slug = _authenticate(request, ledger)
    body = await read_json_object(request)
    amount = body.get("amount_tokens")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise HTTPException(422, "amount_tokens must be a positive integer")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise HTTPException(422, "model must be a non-empty string")
    key = request.headers.get("idempotency-key") or None
    if key is not None and len(key) > _MAX_KEY_LENGTH:
        raise HTTPException(422, f"Idempotency-Key must be at most {_MAX_KEY_LENGTH} characters")
    token = request.headers.get("x-session-token", "")
    reply = ledger.authorize_charge(
        slug, token, amount, model, idempotency_key=key, request_body=body
    )
    logger.debug(
        "charge of %d tokens by %s: HTTP %d%s",
        amount,
        slug,
        reply.status,
        " (replayed)" if reply.replayed else "",
    )
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else None
    return JSONResponse(dict(reply.body), status_code=reply.status, headers=headers)


# -- errors -------------------------------------------------------------------


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # Nobody is left to read this; answering keeps a vanished client from
    # being logged as a server error.
    return JSONResponse({"error": "Client disconnected"}, status_code=400)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Outside the request-id middleware, so the id is added here.
    request_id = request.scope.get("state", {}).get("request_id", _new_request_id())
    return JSONResponse(
        {"error": "Internal sandbox error"}, status_code=500, headers={"X-Request-Id": request_id}
    )


# -- middleware ---------------------------------------------------------------


def _new_request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


class _RequestIdMiddleware:
    """Give every HTTP response an ``X-Request-Id: req_<hex>`` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-Id", request_id)
            await send(message)

        await self.app(scope, receive, send_with_id)


class _FaultMiddleware:
    """Count requests to the two protocol endpoints and play their scripted faults."""

    def __init__(self, app: ASGIApp, faults: FaultPlan) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _ENDPOINT_OF_PATH.get(scope["path"]) if scope["type"] == "http" else None
        fault = self.faults.next(endpoint) if endpoint is not None else None
        if fault is None:
            await self.app(scope, receive, send)
            return
        logger.debug("playing fault on %s: %s", endpoint, fault)
        if fault.delay:
            # The request has arrived and the server is slow: it will be handled
            # after the delay even if the client gave up meanwhile.
            receive = await _buffered(receive)
            await asyncio.sleep(fault.delay)
        if fault.status is not None:
            await _fault_response(fault)(scope, receive, send)
        elif fault.drop == "before":
            await _cut(send, status=503)
        elif fault.drop == "after":
            started: list[int] = []

            async def swallow(message: Message) -> None:
                if message["type"] == "http.response.start":
                    started.append(message["status"])

            await self.app(scope, receive, swallow)
            await _cut(send, status=started[0] if started else 503)
        else:
            await self.app(scope, receive, send)


async def _buffered(receive: Receive) -> Receive:
    """Read the whole request body now; the returned ``receive`` hands it out once."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return receive  # the client left before sending it all
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _fault_response(fault: Fault) -> Response:
    assert fault.status is not None
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    if isinstance(fault.body, str):
        return PlainTextResponse(fault.body, status_code=fault.status, headers=headers)
    body = fault.body if fault.body is not None else {"error": f"Injected fault {fault.status}"}
    return JSONResponse(dict(body), status_code=fault.status, headers=headers)


async def _cut(send: Send, *, status: int) -> None:
    """Start a response that promises a body, then return without it.

    An HTTP server closes the connection mid-response (uvicorn does), so a client
    reading the answer gets a transport error (httpx.RemoteProtocolError), never
    a status; the in-process transports raise the same.
    """
    dropping_connection.set(True)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
        }
    )
