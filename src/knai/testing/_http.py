"""Request helpers shared by the protocol and admin endpoints of the sandbox app.

Each raises starlette's ``HTTPException``; the app turns it into
``{"error": "<detail>"}`` with that status.
"""

from __future__ import annotations

import json
import math
from typing import Any, cast

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ._ledger import Ledger


def ledger_of(request: Request) -> Ledger:
    """The ledger behind the app serving ``request``."""
    ledger: Ledger = request.app.state.ledger
    return ledger


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 otherwise."""
    try:
        body = json.loads(await request.body())
    except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
        raise HTTPException(400, "Request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "Request body must be a JSON object")
    return cast("dict[str, Any]", body)


def text_field(body: dict[str, Any], name: str) -> str:
    """A required non-empty string field; 422 otherwise."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise HTTPException(422, f"{name} must be a non-empty string")
    return value


def int_field(body: dict[str, Any], name: str, *, default: int | None = None, minimum: int) -> int:
    """An integer field (booleans are not integers) of at least ``minimum``; 422 otherwise."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HTTPException(422, f"{name} must be an integer >= {minimum}")
    return value


def seconds_field(body: dict[str, Any], name: str, *, default: float) -> float:
    """A finite, non-negative number of seconds; 422 otherwise."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HTTPException(422, f"{name} must be a number of seconds")
    if value < 0:
        raise HTTPException(422, f"{name} must be >= 0")
    return float(value)
