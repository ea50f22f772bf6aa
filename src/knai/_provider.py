"""What both clients share: their configuration, and the building of each call.

Pure: nothing here sends or sleeps. `_client` wraps it in the two public
facades; `_core` runs the calls built here.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from collections.abc import Generator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Generic, TypeVar, cast

import httpx

from . import _args
from ._constants import (
    CHARGE_PATH,
    DEFAULT_MAX_RETRIES,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    STATUS_PATH,
    USER_AGENT,
)
from ._core import Plan, Reply, SessionWait, Step, call_steps, wait_steps
from ._retry import RetryPolicy
from ._types import Call

if TYPE_CHECKING:
    from ._models import ActiveSession, ChargeResult, Session

    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

__all__ = ["BaseProvider"]

_HttpT = TypeVar("_HttpT", httpx.Client, httpx.AsyncClient)


@functools.cache
def _session() -> type[Session]:
    # Imported when first parsed, not at `import knai` (building models costs more than
    # httpx); cached, as an import statement costs microseconds on every call.
    from ._models import Session

    return Session


@functools.cache
def _charge_result() -> type[ChargeResult]:
    from ._models import ChargeResult

    return ChargeResult


def _options(given: dict[str, object], *names: str) -> tuple[object, ...]:
    """The keyword options a method takes, in order (None when absent); TypeError for others."""
    unknown = given.keys() - set(names)
    if unknown:
        raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
    return tuple(given.get(name) for name in names)


def _policy(retry: RetryPolicy | None, max_retries: object) -> RetryPolicy:
    """The client's policy, its count settled: see `RetryPolicy.max_retries`."""
    # Untyped callers pass anything: the annotation is checked at run time.
    if retry is not None and not isinstance(cast(object, retry), RetryPolicy):
        raise TypeError(f"retry must be a knai.RetryPolicy, got {type(retry).__name__}")
    count = _args.check_max_retries(max_retries)
    policy = retry or RetryPolicy()
    if policy.max_retries is None:
        return replace(policy, max_retries=count)
    if count not in (DEFAULT_MAX_RETRIES, policy.max_retries):
        raise ValueError(
            f"max_retries={count} disagrees with retry=RetryPolicy(max_retries="
            f"{policy.max_retries}): set the count in one place"
        )
    return policy


class BaseProvider(Generic[_HttpT]):
    """Configuration and request building shared by both clients."""

    #: The kind of httpx client a caller may pass, and the error if it is the other kind.
    _http_type: type[httpx.Client] | type[httpx.AsyncClient]
    _wrong_http = ""

    def __init__(
        self,
        provider_api_key: str | None = None,
        provider_slug: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry: RetryPolicy | None = None,
        http_client: _HttpT | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_connections: int | None = None,
    ) -> None:
        api_key = _args.check_token(
            "provider_api_key", _args.from_env(provider_api_key, "provider_api_key", "KNAI_API_KEY")
        )
        slug = _args.check_token(
            "provider_slug", _args.from_env(provider_slug, "provider_slug", "KNAI_PROVIDER_SLUG")
        )
        self.base_url: str = _args.check_base_url(base_url)
        self.provider_slug: str = slug
        self.timeout: httpx.Timeout = _args.check_timeout(timeout)
        self.retry: RetryPolicy = _policy(retry, max_retries)
        self.max_retries: int = self.retry.max_retries or 0
        self._api_key = api_key
        self._headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            # Payloads are tiny: ask for them uncompressed (gzip is still undone, boundedly).
            "Accept-Encoding": "identity",
            **_args.check_default_headers(default_headers),
            "Content-Type": "application/json",
            "X-Provider-API-Key": api_key,
            "X-Provider-Slug": slug,
        }
        if http_client is not None and not isinstance(http_client, self._http_type):
            raise TypeError(self._wrong_http)
        connections = _args.check_max_connections(max_connections, http_client)
        self._owns_http = http_client is None
        self._connect(http_client, connections)

    def _connect(self, http_client: _HttpT | None, connections: int) -> None:
        """Make the driver: over `http_client`, else over a pool of `connections`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(provider_slug={self.provider_slug!r}, base_url={self.base_url!r})"

    def with_options(
        self, *, timeout: float | httpx.Timeout | None = None, max_retries: int | None = None
    ) -> Self:
        """A copy with other defaults that shares this client's connection pool.

        Closing the copy leaves the pool open; close the original when done.

        Example:
            fast = provider.with_options(timeout=2.0, max_retries=0)
        """
        clone = copy.copy(self)
        if timeout is not None:
            clone.timeout = _args.check_timeout(timeout)
        if max_retries is not None:
            clone.max_retries = _args.check_max_retries(max_retries)
        clone._owns_http = False
        return clone

    def _plan(self, timeout: object, max_retries: object) -> Plan:
        return Plan(
            self.retry,
            self.timeout if timeout is None else _args.check_timeout(timeout),
            self.max_retries if max_retries is None else _args.check_max_retries(max_retries),
        )

    def _status_call(self, provider_username: str) -> Call:
        return Call(
            "GET",
            STATUS_PATH,
            {"provider_username": _args.check_username(provider_username)},
            {},
            secrets=(self._api_key,),
        )

    # The call builders take the public methods' arguments as they were given
    # (the async twins pass theirs on unnamed: one signature, the sync one).

    def _get(self, provider_username: str, **options: object) -> Generator[Step, Reply, Session]:
        timeout, retries = _options(options, "timeout", "max_retries")
        return call_steps(
            self._status_call(provider_username), _session, self._plan(timeout, retries)
        )

    def _wait(
        self,
        provider_username: str,
        poll_interval: object = DEFAULT_POLL_INTERVAL,
        **options: object,
    ) -> Generator[Step, Reply, ActiveSession]:
        (timeout,) = _options(options, "timeout")
        wait = SessionWait(provider_username, poll_interval, timeout, self.retry.clock)
        call = self._status_call(provider_username)
        return wait_steps(call, _session, self._plan(None, None), wait)

    def _charge(
        self, session_token: str, amount_tokens: int, model: str, **options: object
    ) -> Generator[Step, Reply, ChargeResult]:
        try:
            return self._charge_steps(session_token, amount_tokens, model, options)
        except (ValueError, TypeError) as exc:
            # A bad argument is raised without the frames whose locals hold the token
            # (error trackers record them), this one's included.
            del session_token
            raise exc.with_traceback(None) from None

    def _charge_steps(
        self, session_token: str, amount_tokens: int, model: str, options: dict[str, object]
    ) -> Generator[Step, Reply, ChargeResult]:
        idempotency_key, timeout, max_retries = _options(
            options, "idempotency_key", "timeout", "max_retries"
        )
        token = _args.check_token("session_token", session_token)
        body = {
            "amount_tokens": _args.check_amount(amount_tokens),
            "model": _args.check_text("model", model),
        }
        key = _args.check_idempotency_key(idempotency_key)
        call = Call(
            "POST",
            CHARGE_PATH,
            None,
            {"X-Session-Token": token, "Idempotency-Key": key},
            json.dumps(body, separators=(",", ":")).encode(),
            idempotency_key=key,
            secrets=(self._api_key, token),
        )
        return call_steps(call, _charge_result, self._plan(timeout, max_retries))
