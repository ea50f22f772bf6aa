"""The call and wait logic of both clients, written once and doing no I/O.

A call is a generator of steps (the sans-I/O shape of h11): it yields
`Send` ("send this request within this budget") or `Pause` ("sleep this
long") and is sent back, for a `Send`, the response with its body or the
exception that ended the attempt. It decides everything else: retries (through
`RetryPolicy`, tenacity behind it), deadlines, `may_have_been_applied`, the
error each outcome maps to, and the parsed model it returns. The drivers in
`_transport` only do what it says (a drawing, not code):

    client method -> core (call_steps / wait_steps) -> driver -> httpx
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeGuard, TypeVar, cast

import httpx

from . import _args
from ._constants import KEEP_RAW_BYTES
from ._errors import APITimeoutError, KNAIError, SessionWaitTimeoutError
from ._redact import scrub
from ._response import Body, answer_of, failure_of, scrub_error
from ._types import Call, ResponseMeta

if TYPE_CHECKING:
    from ._models import ActiveSession, Payload, Session
    from ._retry import RetryPolicy

__all__ = ["Pause", "Plan", "Send", "SessionWait", "Steps", "call_steps", "wait_steps"]

log = logging.getLogger("knai")
_ModelT = TypeVar("_ModelT", bound="Payload")
_T = TypeVar("_T")


@dataclass(slots=True)
class Send:
    """Send `call` with `timeout`; its whole answer must be in by `until` (None: no limit)."""

    call: Call
    timeout: httpx.Timeout
    until: float | None
    clock: Callable[[], float]


@dataclass(slots=True)
class Pause:
    """Sleep `seconds` with `policy`'s sleep (or asleep): between retries and between polls.

    Every pause a client makes runs on the policy's seam, so a test that gives
    the policy a fake clock and sleep drives a whole wait without real time.
    """

    seconds: float
    policy: RetryPolicy


Step = Send | Pause
#: The model a call's answer is parsed as, named by a function that imports it: the
#: async driver builds the pydantic models in a thread before the first call needs them.
Model = Callable[[], type[_ModelT]]
#: What a driver sends back for a `Send`: the response and its body, or what went wrong.
Reply = tuple[httpx.Response, Body] | BaseException | None


@dataclass(slots=True)
class Plan:
    """How one call is made: the per-attempt timeout, its retries and deadline."""

    policy: RetryPolicy
    timeout: httpx.Timeout
    max_retries: int
    deadline: float | None = None


class Steps(Generic[_T]):
    """Iterate over a core generator's steps; `reply` is what the next step is sent."""

    __slots__ = ("reply", "result", "steps")

    def __init__(self, steps: Generator[Step, Reply, _T]) -> None:
        self.steps = steps
        self.reply: Reply = None

    def __iter__(self) -> Iterator[Step]:
        send = self.steps.send
        try:
            while True:
                yield send(self.reply)
        except StopIteration as done:
            self.result: _T = done.value


def _budget(timeout: httpx.Timeout, deadline: float | None, now: float) -> float | None:
    """When an attempt must be over: connect, then the whole answer within `read`.

    An unset connect or read timeout means no limit, not zero.
    """
    until = None
    if timeout.connect is not None and timeout.read is not None:
        until = now + timeout.connect + timeout.read
    if deadline is not None:
        until = deadline if until is None else min(until, deadline)
    return until


def _attempt(call: Call, plan: Plan) -> Send:
    now = plan.policy.clock()
    timeout, deadline = plan.timeout, plan.deadline
    if deadline is not None:
        remaining = deadline - now
        if remaining <= 0:
            raise APITimeoutError("deadline reached before the request was sent")

        def clamp(value: float | None) -> float:
            return remaining if value is None else min(value, remaining)

        timeout = httpx.Timeout(
            connect=clamp(timeout.connect),
            read=clamp(timeout.read),
            write=clamp(timeout.write),
            pool=clamp(timeout.pool),
        )
    return Send(call, timeout, _budget(plan.timeout, deadline, now), plan.policy.clock)


def _meta(call: Call, response: httpx.Response, attempts: int, elapsed: float) -> ResponseMeta:
    return ResponseMeta(
        status_code=response.status_code,
        headers=response.headers,
        request_id=response.headers.get("x-request-id"),
        idempotency_key=call.idempotency_key,
        retries=attempts - 1,
        elapsed=elapsed,
    )


def _finish(call: Call, exc: KNAIError, attempts: int, ambiguous: bool) -> KNAIError:
    """Stamp the final error with what the whole call saw, and scrub its secrets."""
    exc.attempts = attempts
    if call.is_charge:
        exc.idempotency_key = call.idempotency_key
        # Even a final 402 leaves it open: the real service does not document
        # honouring Idempotency-Key, so an earlier, lost attempt may have been
        # applied. Replaying the key settles it.
        exc.may_have_been_applied = ambiguous
    # Error trackers record the locals of every frame an error passed through:
    # below the core they hold the body and the headers (ours, httpx's, h11's).
    # The error keeps the frames from the core up, its causes their type and
    # their scrubbed message.
    exc.__traceback__ = None
    if exc.__suppress_context__:
        exc.__context__ = None  # never shown, but still reachable (and its frames with it)
    cause, seen = exc.__cause__, {id(exc)}
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        cause.__traceback__ = None
        cause.args = tuple(scrub(a, call.secrets) if isinstance(a, str) else a for a in cause.args)
        cause = cause.__cause__ or cause.__context__
    return scrub_error(exc, call.secrets)


def _parsed(
    call: Call, model: Model[_ModelT], response: httpx.Response, body: Body, meta: tuple[int, float]
) -> _ModelT:
    """The model a 2xx answer holds, or the error it maps to (a frame of its own: see _finish)."""
    payload, content = answer_of(call, response, body)
    attempts, elapsed = meta
    parsed = _parser()(
        model(),
        payload,
        _meta(call, response, attempts, elapsed),
        content[:KEEP_RAW_BYTES],
        call.secrets,
    )
    return cast("_ModelT", parsed)


@functools.cache
def _parser() -> Callable[..., object]:
    from ._models import parse_payload  # deferred: `import knai` builds no pydantic model

    return parse_payload


def call_steps(call: Call, model: Model[_ModelT], plan: Plan) -> Generator[Step, Reply, _ModelT]:
    """One call, retried as `plan` says; returns the parsed model or raises a `KNAIError`."""
    policy, clock = plan.policy, plan.policy.clock
    started, attempts, ambiguous, state = clock(), 0, False, None
    while True:
        attempts += 1
        try:
            reply = yield _attempt(call, plan)
            if not isinstance(reply, tuple):
                failure, sent = failure_of(call, reply or RuntimeError("no reply"))
                ambiguous |= sent
                if failure is not reply:
                    failure.__cause__ = reply
                raise failure
            response, body = reply
            ambiguous |= response.status_code >= 500
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s -> %d (attempt %d, request_id=%s)",
                    call.method,
                    call.path,
                    response.status_code,
                    attempts,
                    response.headers.get("x-request-id"),
                )
            try:
                return _parsed(call, model, response, body, (attempts, clock() - started))
            except KNAIError:
                ambiguous |= 200 <= response.status_code < 300  # a 2xx: a charge went through
                raise
        except KNAIError as failure:
            try:
                if not plan.max_retries:
                    raise
                if state is None:
                    state = policy.start(plan.max_retries, plan.deadline)
                pause = policy.pause_after(state, failure)
            except KNAIError as final:
                raise _finish(call, final, attempts, ambiguous) from final.__cause__
        yield Pause(pause, policy)


class SessionWait:
    """The clock of one wait_for_session call (pure: no I/O)."""

    __slots__ = (
        "clock",
        "deadline",
        "interval",
        "last_error",
        "last_status",
        "poll_started",
        "timeout",
        "username",
    )

    def __init__(self, username: str, poll_interval: object, timeout: object, clock: Any) -> None:
        self.username = username
        self.interval, self.timeout = _args.check_poll(poll_interval, timeout)
        self.clock = clock
        self.poll_started = clock()
        self.deadline = None if self.timeout is None else self.poll_started + self.timeout
        self.last_status: str | None = None
        self.last_error: KNAIError | None = None

    def _expired(self, cause: BaseException | None) -> SessionWaitTimeoutError:
        error = SessionWaitTimeoutError(
            f"no active session for provider_username={self.username!r} within"
            f" {self.timeout:g} s (last status: {self.last_status!r})"
        )
        error.__cause__ = cause
        return error

    def check(self) -> None:
        """Start a poll, or raise SessionWaitTimeoutError once the deadline has passed."""
        self.poll_started = self.clock()
        if self.deadline is not None and self.poll_started >= self.deadline:
            raise self._expired(self.last_error)

    def failed(self, exc: KNAIError, policy: RetryPolicy) -> None:
        """A poll failed: ride out transient errors until a deadline, else re-raise."""
        if self.deadline is None or not policy.should_retry(exc):
            raise exc
        self.last_error = exc
        if self.clock() + (exc.retry_after or 0.0) >= self.deadline:
            # Past the deadline, or the server asks us to come back after it.
            raise self._expired(exc) from exc

    def seen(self, session: Session) -> TypeGuard[ActiveSession]:
        # Parsing gives an ActiveSession exactly when the status is active.
        self.last_status = session.get("status")  # as sent, even one the SDK does not know
        self.last_error = None
        return session.is_active

    def pause(self) -> float:
        """Seconds to sleep before the next poll: never past the deadline.

        Polls start every `poll_interval` (the request's own time is not added
        to it); a server's Retry-After on a failure being ridden out outranks it.
        """
        now = self.clock()
        pause: float = self.interval - (now - self.poll_started)
        if self.last_error is not None:
            pause = max(pause, self.last_error.retry_after or 0.0)
        if self.deadline is not None:
            pause = min(pause, self.deadline - now)
        return max(0.0, pause)


def wait_steps(
    call: Call, model: Model[Session], plan: Plan, wait: SessionWait
) -> Generator[Step, Reply, ActiveSession]:
    """Poll `call` until the session is active; every poll is a `call_steps` on this core."""
    polls = Plan(plan.policy, plan.timeout, plan.max_retries, wait.deadline)
    while True:
        wait.check()
        try:
            session = yield from call_steps(call, model, polls)
        except KNAIError as exc:
            wait.failed(exc, plan.policy)
        else:
            if wait.seen(session):
                return session
        yield Pause(wait.pause(), plan.policy)
