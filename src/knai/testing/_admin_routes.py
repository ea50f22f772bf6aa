"""The ``/_sandbox/`` admin API: set up wallets, open sessions, script faults.

JSON in, JSON out, no authentication (the sandbox only listens on loopback).

    POST   /_sandbox/reset                       back to the starting state
    POST   /_sandbox/providers                   {"slug", "api_key"}
    POST   /_sandbox/users                       {"slug", "provider_username", "balance"=0}
    POST   /_sandbox/top-up                      {"slug", "provider_username", "amount_tokens"}
    GET    /_sandbox/wallet?slug=&provider_username=   balance and charges
    POST   /_sandbox/sessions                    {"slug", "provider_username",
                                                  "activate_after"=0, "ttl"=3600}
    POST   /_sandbox/sessions/{session_id}/expire
    POST   /_sandbox/sessions/{session_id}/revoke
    POST   /_sandbox/faults                      {"endpoint", "status"?, "retry_after"?,
                                                  "body"?, "delay"?, "drop"?, "times"=1}
    GET    /_sandbox/faults                      queued faults
    DELETE /_sandbox/faults[?endpoint=]          clear them
    GET    /_sandbox/stats                       requests seen and faults fired

Errors: 400 (body not a JSON object), 404 (unknown provider, user or session),
409 (already exists), 422 (invalid field), each as ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._faults import ENDPOINTS, Fault, PendingFault
from ._http import (
    int_field,
    ledger_of,
    read_json_object,
    seconds_field,
    text_field,
)
from ._ledger import ConflictError, NotFoundError, SessionInfo

PREFIX = "/_sandbox"


def admin_routes() -> list[BaseRoute]:
    return [
        Route(f"{PREFIX}/reset", _reset, methods=["POST"]),
        Route(f"{PREFIX}/providers", _create_provider, methods=["POST"]),
        Route(f"{PREFIX}/users", _create_user, methods=["POST"]),
        Route(f"{PREFIX}/top-up", _top_up, methods=["POST"]),
        Route(f"{PREFIX}/wallet", _wallet, methods=["GET"]),
        Route(f"{PREFIX}/sessions", _open_session, methods=["POST"]),
        Route(f"{PREFIX}/sessions/{{session_id}}/{{action}}", _end_session, methods=["POST"]),
        Route(f"{PREFIX}/faults", _list_faults, methods=["GET"]),
        Route(f"{PREFIX}/faults", _add_fault, methods=["POST"]),
        Route(f"{PREFIX}/faults", _clear_faults, methods=["DELETE"]),
        Route(f"{PREFIX}/stats", _stats, methods=["GET"]),
    ]


def _refusal(exc: Exception) -> HTTPException:
    if isinstance(exc, NotFoundError):
        return HTTPException(404, str(exc))
    if isinstance(exc, ConflictError):
        return HTTPException(409, str(exc))
    return HTTPException(422, str(exc))


async def _reset(request: Request) -> Response:
    ledger_of(request).reset()
    return JSONResponse({"reset": True})


async def _create_provider(request: Request) -> Response:
    body = await read_json_object(request)
    slug, api_key = text_field(body, "slug"), text_field(body, "api_key")
    try:
        ledger_of(request).add_provider(slug, api_key)
    except (ConflictError, ValueError) as exc:
        raise _refusal(exc) from None
    return JSONResponse({"slug": slug}, status_code=201)


async def _create_user(request: Request) -> Response:
    body = await read_json_object(request)
    slug, username = text_field(body, "slug"), text_field(body, "provider_username")
    balance = int_field(body, "balance", default=0, minimum=0)
    try:
        balance = ledger_of(request).add_user(slug, username, balance)
    except (NotFoundError, ConflictError) as exc:
        raise _refusal(exc) from None
    return JSONResponse(
        {"slug": slug, "provider_username": username, "balance": balance}, status_code=201
    )


async def _top_up(request: Request) -> Response:
    body = await read_json_object(request)
    slug, username = text_field(body, "slug"), text_field(body, "provider_username")
    amount = int_field(body, "amount_tokens", minimum=1)
    try:
        balance = ledger_of(request).top_up(slug, username, amount)
    except NotFoundError as exc:
        raise _refusal(exc) from None
    return JSONResponse({"slug": slug, "provider_username": username, "balance": balance})


async def _wallet(request: Request) -> Response:
    query = dict(request.query_params)
    slug, username = text_field(query, "slug"), text_field(query, "provider_username")
    ledger = ledger_of(request)
    try:
        balance = ledger.balance(slug, username)
        charges = ledger.charges(slug, username)
    except NotFoundError as exc:
        raise _refusal(exc) from None
    return JSONResponse(
        {
            "slug": slug,
            "provider_username": username,
            "balance": balance,
            "charges": [c.to_json() for c in charges],
        }
    )


def _session_json(session: SessionInfo, *, with_token: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "session_id": session.session_id,
        "provider_username": session.provider_username,
        "status": session.status,
        "created_at": session.created_at,
        "activates_at": session.activates_at,
        "expires_at": session.expires_at,
    }
    if with_token:
        body["session_token"] = session.session_token
    return body


async def _open_session(request: Request) -> Response:
    body = await read_json_object(request)
    slug, username = text_field(body, "slug"), text_field(body, "provider_username")
    activate_after = seconds_field(body, "activate_after", default=0.0)
    ttl = seconds_field(body, "ttl", default=3600.0)
    try:
        session = ledger_of(request).open_session(
            slug, username, activate_after=activate_after, ttl=ttl
        )
    except (NotFoundError, ValueError) as exc:
        raise _refusal(exc) from None
    return JSONResponse(_session_json(session, with_token=True), status_code=201)


async def _end_session(request: Request) -> Response:
    session_id, action = request.path_params["session_id"], request.path_params["action"]
    ledger = ledger_of(request)
    try:
        if action == "expire":
            session = ledger.expire_session(session_id)
        elif action == "revoke":
            session = ledger.revoke_session(session_id)
        else:
            raise HTTPException(404, "Not Found")
    except NotFoundError as exc:
        raise _refusal(exc) from None
    return JSONResponse(_session_json(session, with_token=False))


async def _list_faults(request: Request) -> Response:
    pending = ledger_of(request).faults.pending()
    return JSONResponse({"faults": [_fault_json(p) for p in pending]})


async def _clear_faults(request: Request) -> Response:
    endpoint = request.query_params.get("endpoint")
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise HTTPException(422, f"endpoint must be one of {', '.join(ENDPOINTS)}")
    return JSONResponse({"cleared": ledger_of(request).faults.clear(endpoint)})


async def _add_fault(request: Request) -> Response:
    body = await read_json_object(request)
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise HTTPException(422, f"endpoint must be one of {', '.join(ENDPOINTS)}")
    times = int_field(body, "times", default=1, minimum=1)
    try:  # Fault checks the types and the combination of its fields
        fault = Fault(
            status=body.get("status"),
            retry_after=body.get("retry_after"),
            body=body.get("body"),
            delay=body.get("delay") or 0.0,
            drop=body.get("drop"),
        )
    except ValueError as exc:
        raise _refusal(exc) from None
    ledger_of(request).faults.add(endpoint, fault, times=times)
    return JSONResponse(_fault_json(PendingFault(endpoint, times, fault)), status_code=201)


def _fault_json(pending: PendingFault) -> dict[str, Any]:
    return {"endpoint": pending.endpoint, "remaining": pending.remaining, **pending.fault.to_json()}


async def _stats(request: Request) -> Response:
    stats = ledger_of(request).faults.stats()
    return JSONResponse({"requests": stats.requests, "faults_fired": stats.faults_fired})
