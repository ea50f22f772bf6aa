"""One API call: build the request, send it (retrying), map the answer.

Data flows client -> `Call` -> transport -> httpx and back as a validated model
or a `KNAIError`. Everything that does not wait on the network is a pure
function here, shared by `SyncTransport` and `AsyncTransport`, which differ
only in `await`.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx

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
from ._lanes import Lanes
from ._redact import scrub
from ._retry import RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    from ._models import _Payload  # pyright: ignore[reportPrivateUsage]

__all__ = ["DEFAULT_TIMEOUT", "AsyncTransport", "Call", "ResponseMeta", "SyncTransport"]

log = logging.getLogger("knai")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
#: The protocol's payloads are tiny: a body larger than this is refused, not buffered.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_KEEP_RAW_BYTES = 64 * 1024
_MAX_MESSAGE = 300  # an HTML error page is not a message

_ModelT = TypeVar("_ModelT", bound="_Payload")

_STATUS_ERRORS: dict[int, type[KNAIError]] = {
    401: InvalidAPIKeyError,
    402: InsufficientBalanceError,
    403: SessionExpiredError,
    410: SessionExpiredError,
    429: RateLimitError,
}

# httpx failures that happen before the request can have reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """What the HTTP exchange behind a result looked like.

    Attributes:
        status_code: The final response's HTTP status (0 for a model built by hand).
        headers: The final response's headers (case-insensitive keys).
        request_id: Its `X-Request-Id` header, if any.
        idempotency_key: The `Idempotency-Key` sent with a charge, else None.
        retries: How many retries it took (0 when the first attempt succeeded).
        elapsed: Seconds from the first attempt to the final response.
    """

    status_code: int = 0
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    request_id: str | None = None
    idempotency_key: str | None = None
    retries: int = 0
    elapsed: float = 0.0


_Answer = tuple[Any, ResponseMeta, bytes]  # decoded JSON, metadata, the bytes received


@dataclass(frozen=True, slots=True)
class Call:
    """One logical API call, fully built, before any attempt is made."""

    method: str
    path: str
    params: dict[str, str] | None
    headers: dict[str, str]  # this call's own, on top of the client's
    content: bytes | None = None
    idempotency_key: str | None = None
    # Values that must never reach a message or a log line.
    secrets: tuple[str, ...] = ()

    @property
    def is_charge(self) -> bool:
        return self.idempotency_key is not None


class _Attempts:
    """What one call's attempts have seen so far."""

    __slots__ = ("ambiguous", "count", "started")

    def __init__(self) -> None:
        self.count = 0
        self.ambiguous = False  # an attempt may have been applied by the server
        self.started = time.monotonic()


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    result: str = scrub(text, secrets)
    return result


def _scrub_bytes(raw: bytes, secrets: tuple[str, ...]) -> bytes:
    for secret in secrets:
        if secret:
            raw = raw.replace(secret.encode(), b"<redacted>")
    return raw


def _attempt_timeout(timeout: httpx.Timeout, deadline: float | None) -> httpx.Timeout:
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise APITimeoutError("deadline reached before the request was sent")

    def clamp(value: float | None) -> float:
        return remaining if value is None else min(value, remaining)

    return httpx.Timeout(
        connect=clamp(timeout.connect),
        read=clamp(timeout.read),
        write=clamp(timeout.write),
        pool=clamp(timeout.pool),
    )


def _attempt_budget(timeout: httpx.Timeout, deadline: float | None) -> float:
    """When an attempt must be over: connect, then the whole answer within `read`."""
    budget = sum(t for t in (timeout.connect, timeout.read) if t is not None) or 3600.0
    until = time.monotonic() + budget
    return until if deadline is None else min(until, deadline)


class _Body:
    """A response body read raw, within the size cap and the attempt's time budget.

    httpx's timeouts bound each read, not the whole answer: a server that
    trickles bytes could hold a call forever, so the budget is checked per
    chunk. Content-Encoding is undone here, boundedly: httpx would inflate a
    whole compressed chunk at once (a small gzip bomb becomes gigabytes).
    """

    __slots__ = ("complete", "identity", "raw", "until")

    def __init__(self, until: float) -> None:
        self.raw = bytearray()
        self.complete = True
        self.identity = False
        self.until = until

    def feed(self, chunk: bytes) -> bool:
        """Keep `chunk`; False once the cap is passed (stop reading)."""
        self.raw += chunk
        if len(self.raw) > MAX_RESPONSE_BYTES:
            self.complete = False
            return False
        if time.monotonic() > self.until:
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


class _MappedTransportErrors:
    """The one place where httpx's exceptions become knai's (a class: cheaper per call)."""

    __slots__ = ("attempts", "call")

    def __init__(self, call: Call, attempts: _Attempts) -> None:
        self.call = call
        self.attempts = attempts

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or not isinstance(exc, httpx.RequestError):
            return
        call, what = self.call, _scrub(str(exc), self.call.secrets)
        if isinstance(exc, httpx.DecodingError):  # from a transport that decodes bodies itself
            self.attempts.ambiguous = True
            raise ResponseValidationError(f"response body could not be decoded: {what}") from exc
        self.attempts.ambiguous |= not isinstance(exc, _NOT_SENT)
        error = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        raise error(f"{type(exc).__name__} on {call.method} {call.path}: {what}") from exc


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("error", "message"):
            value: object = cast("dict[str, object]", body).get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict):
                message: object = cast("dict[str, object]", value).get("message")
                if isinstance(message, str):
                    return message
    return None


def error_from_response(call: Call, status: int, headers: httpx.Headers, body: bytes) -> KNAIError:
    """Map a non-2xx answer to the exception its status calls for (0.1.0's table, extended)."""
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):
        parsed = {"error": body[:_KEEP_RAW_BYTES].decode("utf-8", "replace")}
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else KNAIError
    message = _error_message(parsed)
    if message is None and 300 <= status < 400:
        message = f"unexpected redirect to {headers.get('location', '?')}: not followed"
    if message:
        message = _scrub(message, call.secrets)
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE] + "..."
    return cls(
        message,
        status,
        scrub(parsed, call.secrets),  # error trackers keep response_body: no secrets in it
        request_id=headers.get("x-request-id"),
        headers=headers,
        retry_after=parse_retry_after(headers.get("retry-after")),
    )


def interpret(call: Call, attempts: _Attempts, response: httpx.Response, body: _Body) -> _Answer:
    """Decode a 2xx answer's JSON, with its metadata and bytes, or raise the mapped error.

    A body cut at MAX_RESPONSE_BYTES, or one whose encoding cannot be undone,
    is refused on a 2xx; an error answer is still mapped from what was read.
    """
    status = response.status_code
    if status >= 500:
        attempts.ambiguous = True
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s -> %d (attempt %d, %.1f ms, request_id=%s)",
            call.method,
            call.path,
            status,
            attempts.count,
            response.elapsed.total_seconds() * 1000,
            response.headers.get("x-request-id"),
        )
    decoded = body.decoded(response.headers)
    content, complete = decoded if decoded is not None else (bytes(body.raw), False)
    if not 200 <= status < 300:
        raise error_from_response(call, status, response.headers, content)
    meta = ResponseMeta(
        status_code=status,
        headers=response.headers,
        request_id=response.headers.get("x-request-id"),
        idempotency_key=call.idempotency_key,
        retries=attempts.count - 1,
        elapsed=time.monotonic() - attempts.started,
    )
    if decoded is None:
        problem = "response body has a Content-Encoding that cannot be decoded"
    elif not complete:
        problem = f"response body exceeds {MAX_RESPONSE_BYTES} bytes"
    else:
        try:
            return json.loads(content), meta, content
        except (ValueError, RecursionError):
            problem = "response body is not JSON"
    attempts.ambiguous = True
    raise ResponseValidationError(
        problem,
        status,
        raw_body=_scrub_bytes(content[:_KEEP_RAW_BYTES], call.secrets),
        request_id=meta.request_id,
        headers=response.headers,
    ) from None


def finish_error(call: Call, attempts: _Attempts, exc: KNAIError) -> KNAIError:
    """Stamp the final error with what the whole call saw."""
    exc.attempts = attempts.count
    if call.is_charge:
        exc.idempotency_key = call.idempotency_key
        # Even a final 402 leaves it open: the real service does not document
        # honouring Idempotency-Key, so an earlier, lost attempt may have been
        # applied. Replaying the key settles it (a wallet that honours keys
        # answers the same 402 again).
        exc.may_have_been_applied = attempts.ambiguous
    return exc


class _TransportBase:
    def __init__(
        self,
        base_url: str,
        policy: RetryPolicy,
        http: httpx.Client | httpx.AsyncClient,
        headers: dict[str, str],
    ) -> None:
        self.base_url = base_url
        self.policy = policy
        # What httpx's build_request would redo on every call, done once: merge
        # the httpx client's default headers (as they are now) under the SDK's,
        # and parse each endpoint's URL.
        ours = {name.lower() for name in headers}
        self._headers = {k: v for k, v in http.headers.items() if k not in ours} | headers
        self._urls: dict[str, httpx.URL] = {}

    def _request(self, call: Call, timeout: httpx.Timeout) -> httpx.Request:
        url = self._urls.get(call.path)
        if url is None:
            url = self._urls[call.path] = httpx.URL(self.base_url + call.path)
        return httpx.Request(
            call.method,
            url,
            params=call.params,
            headers={**self._headers, **call.headers} if call.headers else self._headers,
            content=call.content,
            extensions={"timeout": timeout.as_dict()},
        )

    def _parse(
        self,
        call: Call,
        attempts: _Attempts,
        model: type[_ModelT],
        answer: _Answer,
    ) -> _ModelT:
        # Imported here, not at the top: `import knai` stays free of pydantic's
        # model machinery until the first response is parsed.
        from ._models import parse_payload

        payload, meta, body = answer
        try:
            return parse_payload(model, payload, meta, body[:_KEEP_RAW_BYTES])
        except ResponseValidationError as exc:
            attempts.ambiguous = True  # a 2xx came back: a charge went through
            raise finish_error(call, attempts, exc) from None


class SyncTransport(_TransportBase):
    """Sends `Call`s over one pooled `httpx.Client`."""

    def __init__(
        self, http: httpx.Client, base_url: str, policy: RetryPolicy, headers: dict[str, str]
    ) -> None:
        super().__init__(base_url, policy, http, headers)
        self.http = http

    def send(
        self,
        call: Call,
        model: type[_ModelT],
        *,
        timeout: httpx.Timeout,
        max_retries: int,
        deadline: float | None = None,
    ) -> _ModelT:
        attempts = _Attempts()
        try:
            try:
                answer = self._attempt(call, attempts, timeout, deadline)
            except KNAIError as failure:
                # The happy path never builds a tenacity loop; a failure resumes in one.
                if not max_retries:
                    raise
                answer = self.policy.resume(
                    failure,
                    self._attempt,
                    (call, attempts, timeout, deadline),
                    max_retries,
                    deadline,
                )
        except KNAIError as exc:
            raise finish_error(call, attempts, exc) from exc.__cause__
        return self._parse(call, attempts, model, answer)

    def _attempt(
        self, call: Call, attempts: _Attempts, timeout: httpx.Timeout, deadline: float | None
    ) -> _Answer:
        attempts.count += 1
        request = self._request(call, _attempt_timeout(timeout, deadline))
        body = _Body(_attempt_budget(timeout, deadline))
        with _MappedTransportErrors(call, attempts):
            response = self.http.send(request, stream=True, follow_redirects=False)
            try:
                for chunk in response.iter_raw():
                    if not body.feed(chunk):
                        break
            except httpx.StreamConsumed:
                body.already_read(response)
            finally:
                response.close()
        return interpret(call, attempts, response, body)


class AsyncTransport(_TransportBase):
    """Sends `Call`s over the SDK's lanes, or over a caller's `httpx.AsyncClient` as it is."""

    def __init__(
        self,
        http: httpx.AsyncClient | Lanes,
        base_url: str,
        policy: RetryPolicy,
        headers: dict[str, str],
    ) -> None:
        # The SDK's own pool is lanes: one httpx pool of many connections slows
        # as concurrency grows, so each request takes a client of one
        # connection instead (see `_lanes`). A caller's client is used as is.
        self.lanes = http if isinstance(http, Lanes) else None
        self.http = http.first if isinstance(http, Lanes) else http
        super().__init__(base_url, policy, self.http, headers)

    async def aclose(self) -> None:
        """Close the SDK's own lanes (never a caller's client)."""
        if self.lanes is not None:
            await self.lanes.aclose()

    async def send(
        self,
        call: Call,
        model: type[_ModelT],
        *,
        timeout: httpx.Timeout,
        max_retries: int,
        deadline: float | None = None,
    ) -> _ModelT:
        attempts = _Attempts()
        try:
            try:
                answer = await self._attempt(call, attempts, timeout, deadline)
            except KNAIError as failure:
                if not max_retries:
                    raise
                answer = await self.policy.aresume(
                    failure,
                    self._attempt,
                    (call, attempts, timeout, deadline),
                    max_retries,
                    deadline,
                )
        except KNAIError as exc:
            raise finish_error(call, attempts, exc) from exc.__cause__
        return self._parse(call, attempts, model, answer)

    async def _attempt(
        self, call: Call, attempts: _Attempts, timeout: httpx.Timeout, deadline: float | None
    ) -> _Answer:
        attempts.count += 1
        request = self._request(call, _attempt_timeout(timeout, deadline))
        lanes = self.lanes
        lane = (
            self.http if lanes is None else await self._take_lane(lanes, request, timeout, deadline)
        )
        # The budget starts once a lane is free: queueing is bounded by the pool timeout.
        body = _Body(_attempt_budget(timeout, deadline))
        try:
            with _MappedTransportErrors(call, attempts):
                response = await lane.send(request, stream=True, follow_redirects=False)
                try:
                    async for chunk in response.aiter_raw():
                        if not body.feed(chunk):
                            break
                except httpx.StreamConsumed:
                    body.already_read(response)
                finally:
                    await response.aclose()
        finally:
            if lanes is not None:
                lanes.give(lane)
        return interpret(call, attempts, response, body)

    @staticmethod
    async def _take_lane(
        lanes: Lanes, request: httpx.Request, timeout: httpx.Timeout, deadline: float | None
    ) -> httpx.AsyncClient:
        """A free lane, waiting no longer than the pool timeout and the call's deadline.

        With no pool timeout, the wait is bounded by the attempt's budget instead.
        """
        pool = request.extensions["timeout"].get("pool")  # already clamped to the deadline
        limit = _attempt_budget(timeout, deadline) - time.monotonic() if pool is None else pool
        lane = await lanes.take(limit)
        if lane is None:
            # Nothing was sent: a definite failure, safe to retry.
            raise APITimeoutError(
                f"no free connection slot within the pool timeout for {request.method}"
                f" {request.url.path}"
            ) from None
        return lane
