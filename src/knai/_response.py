"""The pure response side: a bounded body, its decoding, and the error each answer maps to.

Nothing here reads a socket or sleeps: the drivers feed it bytes and
exceptions, the core asks it what they mean.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Callable

import httpx

from ._constants import KEEP_RAW_BYTES, MAX_JSON_DEPTH, MAX_MESSAGE, MAX_RESPONSE_BYTES
from ._errors import (
    APIConnectionError,
    APITimeoutError,
    InsufficientBalanceError,
    InvalidAPIKeyError,
    KNAIError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    SessionExpiredError,
)
from ._json import JSONValue
from ._redact import scrub, scrub_bytes
from ._retry import parse_retry_after
from ._types import Call

__all__ = [
    "Body",
    "DeepJSONError",
    "answer_of",
    "error_from_response",
    "failure_of",
    "load_json",
    "scrub_error",
]

STATUS_ERRORS: dict[int, type[KNAIError]] = {
    401: InvalidAPIKeyError,
    402: InsufficientBalanceError,
    403: SessionExpiredError,
    410: SessionExpiredError,
    429: RateLimitError,
}

# httpx failures that happen before the request can have reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# A JSON string (skipped whole) or a bracket (counted): enough to measure nesting.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class DeepJSONError(ValueError):
    """JSON nested deeper than MAX_JSON_DEPTH: refused before `json` builds it."""


def load_json(content: bytes) -> JSONValue:
    """`json.loads`, but nesting is bounded first, so no view of the result can recurse deep."""
    if content.count(b"[") + content.count(b"{") > MAX_JSON_DEPTH:  # else it cannot be deep
        depth = 0
        for token in _JSON_TOKEN.finditer(content):
            bracket = token.group()
            if bracket in (b"[", b"{"):
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    raise DeepJSONError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            elif bracket in (b"]", b"}"):
                depth -= 1
    decoded: JSONValue = json.loads(content)  # what json.loads can build is JSON
    return decoded


class Body:
    """A response body read raw, within the size cap and the attempt's time budget.

    httpx's timeouts bound each read, not the whole answer: a server that
    trickles bytes could hold a call forever, so the budget is checked per
    chunk. Content-Encoding is undone here, boundedly: httpx would inflate a
    whole compressed chunk at once (a small gzip bomb becomes gigabytes).
    """

    __slots__ = ("clock", "complete", "identity", "raw", "until")

    def __init__(self, until: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.raw = bytearray()
        self.complete = True
        self.identity = False
        self.until = until
        self.clock = clock

    def feed(self, chunk: bytes) -> bool:
        """Keep `chunk`; False once the cap is passed (stop reading)."""
        self.raw += chunk
        if len(self.raw) > MAX_RESPONSE_BYTES:
            self.complete = False
            return False
        if self.until is not None and self.clock() > self.until:
            raise httpx.ReadTimeout("the response took longer than the timeout to arrive")
        return True

    def already_read(self, response: httpx.Response) -> None:
        """Take a body some transport read (and decoded) before handing it over."""
        self.raw = bytearray(response.content[: MAX_RESPONSE_BYTES + 1])
        self.complete = len(self.raw) <= MAX_RESPONSE_BYTES
        self.identity = True

    def decoded(self, headers: httpx.Headers) -> tuple[bytes, bool] | None:
        """(content, complete), or None when the Content-Encoding cannot be undone."""
        encoding = "" if self.identity else headers.get("content-encoding", "").strip().lower()
        raw = bytes(self.raw)
        if encoding in ("", "identity"):
            return raw, self.complete
        if encoding not in ("gzip", "x-gzip", "deflate"):
            return None
        for wbits in (47, -15) if encoding == "deflate" else (47,):  # zlib/gzip, then raw
            inflater = zlib.decompressobj(wbits)
            try:
                content = inflater.decompress(raw, MAX_RESPONSE_BYTES + 1)
            except zlib.error:
                continue
            fits = len(content) <= MAX_RESPONSE_BYTES and not inflater.unconsumed_tail
            return content[:MAX_RESPONSE_BYTES], self.complete and fits
        return None


def _cut(message: str) -> str:
    return message[:MAX_MESSAGE] + "..." if len(message) > MAX_MESSAGE else message


def _error_message(body: JSONValue) -> str | None:
    if isinstance(body, dict):
        for key in ("error", "message"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict):
                nested = value.get("message")
                if isinstance(nested, str):
                    return nested
    return None


def error_from_response(call: Call, status: int, headers: httpx.Headers, body: bytes) -> KNAIError:
    """Map a non-2xx answer to the exception its status calls for (0.1.0's table, extended)."""
    try:
        parsed: JSONValue = load_json(body)
    except (ValueError, RecursionError):
        parsed = {"error": body[:KEEP_RAW_BYTES].decode("utf-8", "replace")}
    cls = STATUS_ERRORS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else KNAIError
    message = _error_message(parsed)
    if message is None and 300 <= status < 400:
        message = f"unexpected redirect to {headers.get('location', '?')}: not followed"
    return cls(
        None if message is None else _cut(scrub(message, call.secrets)) or None,
        status,
        parsed,
        request_id=headers.get("x-request-id"),
        headers=headers,
        retry_after=parse_retry_after(headers.get("retry-after")),
    )


def answer_of(call: Call, response: httpx.Response, body: Body) -> tuple[JSONValue, bytes]:
    """A 2xx answer's decoded JSON and its bytes; else raise the mapped error.

    A body cut at MAX_RESPONSE_BYTES, or one whose encoding cannot be undone,
    is refused on a 2xx; an error answer is still mapped from what was read.
    """
    status = response.status_code
    decoded = body.decoded(response.headers)
    content, complete = decoded if decoded is not None else (bytes(body.raw), False)
    if not 200 <= status < 300:
        raise error_from_response(call, status, response.headers, content)
    if decoded is None:
        problem = "response body has a Content-Encoding that cannot be decoded"
    elif not complete:
        problem = f"response body exceeds {MAX_RESPONSE_BYTES} bytes"
    else:
        try:
            return load_json(content), content
        except DeepJSONError as exc:
            problem = f"response body is not usable JSON: {exc}"
        except (ValueError, RecursionError):
            problem = "response body is not JSON"
    raise ResponseValidationError(
        problem,
        status,
        raw_body=content[:KEEP_RAW_BYTES],
        request_id=response.headers.get("x-request-id"),
        headers=response.headers,
    )


def failure_of(call: Call, exc: BaseException) -> tuple[KNAIError, bool]:
    """The error an exception from sending becomes, and whether the request may have gone out.

    httpx's errors map to knai's here and only here; anything else that
    escapes the I/O (a bug, a closed event loop) still becomes a `KNAIError`,
    so a charge that may have gone out is never reported as a raw exception.
    """
    what = scrub(str(exc), call.secrets)
    where = f"{type(exc).__name__} on {call.method} {call.path}: {what}"
    if isinstance(exc, KNAIError):
        return exc, False
    if isinstance(exc, httpx.DecodingError):  # from a transport that decodes bodies itself
        return ResponseValidationError(f"response body could not be decoded: {what}"), True
    if isinstance(exc, httpx.RequestError):
        error = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        return error(where), not isinstance(exc, _NOT_SENT)
    return KNAIError(f"unexpected {where}"), True


def scrub_error(exc: KNAIError, secrets: tuple[str, ...]) -> KNAIError:
    """Remove the call's own secrets from every field of `exc`, whatever the body's shape.

    Error trackers keep the message, the parsed body, the raw bytes and the
    headers of an error long after the call.
    """
    exc.message = scrub(exc.message, secrets)
    exc.args = tuple(scrub(a, secrets) if isinstance(a, str) else a for a in exc.args)
    exc.response_body = scrub(exc.response_body, secrets)
    if isinstance(exc, ResponseValidationError):
        exc.raw_body = scrub_bytes(exc.raw_body, secrets)
    if exc.headers is not None:
        headers = httpx.Headers(exc.headers)
        scrubbed = [(k, scrub(v, secrets)) for k, v in headers.multi_items()]
        if scrubbed != headers.multi_items():  # in any form, as the body (`_redact`)
            exc.headers = httpx.Headers(scrubbed)
    return exc
