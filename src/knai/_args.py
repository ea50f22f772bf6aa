"""Argument checks: each raises ValueError naming the argument, before anything is sent."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import uuid
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import httpx

from ._constants import DEFAULT_BASE_URL, DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS_LIMIT

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_AMOUNT_TOKENS",
    "check_amount",
    "check_base_url",
    "check_default_headers",
    "check_idempotency_key",
    "check_max_connections",
    "check_max_retries",
    "check_poll",
    "check_text",
    "check_timeout",
    "check_token",
    "check_url",
    "check_username",
    "from_env",
]

MAX_AMOUNT_TOKENS = 2**63 - 1
_MAX_KEY_LENGTH = 255
_MAX_USERNAME_LENGTH = 1024  # encoded, it must fit in a URL
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_RESERVED_HEADERS = frozenset(
    {
        "x-provider-api-key",
        "x-provider-slug",
        "x-session-token",
        "idempotency-key",
        "content-type",
        "content-length",
        "host",
    }
)


def from_env(value: str | None, name: str, variable: str) -> str:
    """`value`, else the environment variable, else ValueError naming both.

    A value read from the environment loses its surrounding whitespace (env
    files often end a line with CR or a tab) and is checked as a token under
    the variable's name, so an error names what the user has to fix.
    """
    if value is None:
        value = os.environ.get(variable, "").strip()
        if value:
            return check_token(variable, value)
    if not value:
        raise ValueError(f"{name} is required: pass a non-empty {name}= or set {variable}")
    return value


def check_token(name: str, value: object) -> str:
    """A secret sent in a header: non-empty printable ASCII with no whitespace."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is required and must be a non-empty str")
    # Printable ASCII is exactly 0x20-0x7E; then no space. (str methods run in C.)
    if not (value.isascii() and value.isprintable()) or " " in value:
        # Never echo the value: it is a secret.
        raise ValueError(f"{name} must be printable ASCII without whitespace or control characters")
    return value


def check_text(name: str, value: object) -> str:
    """A non-empty name (a model's) without whitespace or control characters."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} is required and must be a non-empty str, got {value!r}")
    _check_utf8(name, value)
    # str.isprintable() is False for every whitespace character but " ".
    if not value.isprintable() or " " in value:
        raise ValueError(f"{name} must not contain whitespace or control characters, got {value!r}")
    return value


def check_username(value: object) -> str:
    """The provider_username sent in the query string (encoded exactly)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"provider_username must be a non-empty str, got {value!r}")
    if "\x00" in value:
        raise ValueError("provider_username must not contain NUL characters")
    if len(value) > _MAX_USERNAME_LENGTH:
        raise ValueError(f"provider_username must be at most {_MAX_USERNAME_LENGTH} characters")
    _check_utf8("provider_username", value)
    return value


def _check_utf8(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be valid Unicode text (no lone surrogates)") from None


def check_amount(value: object) -> int:
    """A positive whole number of tokens (not a bool, a float or a str)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"amount_tokens must be a positive int, got {type(value).__name__} {value!r}"
        )
    if not 0 < value <= MAX_AMOUNT_TOKENS:
        raise ValueError(f"amount_tokens must be between 1 and 2**63-1, got {value!r}")
    return int(value)


def check_idempotency_key(value: object) -> str:
    """A caller's key, or a fresh UUID4 when None."""
    if value is None:
        return str(uuid.uuid4())
    key = check_token("idempotency_key", value)
    if len(key) > _MAX_KEY_LENGTH:
        raise ValueError(f"idempotency_key must be at most {_MAX_KEY_LENGTH} characters")
    return key


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return float(value)


def check_timeout(value: object) -> httpx.Timeout:
    """An httpx.Timeout, or seconds applied to connect, read, write and pool alike."""
    if isinstance(value, httpx.Timeout):
        return value
    return httpx.Timeout(_positive_seconds("timeout", value))


def check_poll(poll_interval: object, timeout: object) -> tuple[float, float | None]:
    """wait_for_session's poll_interval and optional overall timeout."""
    interval = _positive_seconds("poll_interval", poll_interval)
    return interval, None if timeout is None else _positive_seconds("timeout", timeout)


def check_max_retries(value: object) -> int:
    """A retry count: an int >= 0 (0 turns retries off)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_retries must be an int >= 0, got {value!r}")
    return value


def check_max_connections(value: object, http_client: object) -> int:
    """A connection limit, 1 to 1000, for the SDK's own pool (not with `http_client`)."""
    if value is None:
        return DEFAULT_MAX_CONNECTIONS
    if http_client is not None:
        raise ValueError(
            "max_connections sizes the SDK's own pool; with http_client, set limits on that"
            " client instead"
        )
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_CONNECTIONS_LIMIT
    ):
        raise ValueError(
            f"max_connections must be an int from 1 to {MAX_CONNECTIONS_LIMIT}, got {value!r}"
        )
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(value: object) -> str:
    """`base_url`, else `KNAI_BASE_URL`, else the default: checked, without its trailing slash.

    An https URL (or http to a loopback host) that httpx accepts, with no
    credentials, query or fragment. Surrounding whitespace is stripped;
    anything else wrong raises ValueError naming the argument or the variable.
    """
    source = "base_url"
    if value is None:
        value = os.environ.get("KNAI_BASE_URL", "").strip()
        if value:
            source = "KNAI_BASE_URL"
        else:
            value = DEFAULT_BASE_URL
    return check_url(value, source)


def check_url(value: object, source: str, *, http_anywhere: bool = False) -> str:
    """`value` as a base URL httpx will take, named `source` in errors; see `check_base_url`.

    `http_anywhere` allows plain http to any host: the sandbox's admin API, which
    carries no secret and may be served from a container (`knai sandbox --host`).
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{source} must be a non-empty str")
    value = value.strip()
    # Messages name the scheme and host only: a URL may carry credentials.
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise ValueError(
            f"{source} must be printable ASCII without whitespace or control characters"
        )
    if "?" in value or "#" in value:
        # Even an empty one: `https://host/?` would put every path in the query.
        raise ValueError(f"{source} must not carry a query or a fragment")
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = parts.port
        httpx.URL(value)
    except (ValueError, httpx.InvalidURL):
        raise ValueError(f"{source} is not a valid URL (check its host and port)") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{source} must not carry credentials")
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(
            f"{source} must be an http(s) URL with a host, got scheme {parts.scheme!r}"
        )
    if port == 0:
        raise ValueError(f"{source} has port 0: give a port from 1 to 65535")
    if parts.scheme == "http" and not http_anywhere and not _is_loopback(host):
        raise ValueError(
            f"{source} must use https: plain http is only allowed to a loopback host, not {host!r}"
        )
    return value.rstrip("/")


def check_default_headers(value: Mapping[str, str] | None) -> dict[str, str]:
    """Extra headers for every request; they may not replace the protocol's own."""
    # Typed str to str, but untyped callers pass anything: check each.
    given = cast("dict[object, object]", dict(value or {}))
    headers: dict[str, str] = {}
    for name, header_value in given.items():
        if not isinstance(name, str) or not isinstance(header_value, str):
            raise ValueError("default_headers must map str to str")
        headers[name] = header_value
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"default_headers has an invalid header name {name!r}")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"default_headers must not set {name!r}: the SDK sets it")
        if not all(c == "\t" or " " <= c <= "~" for c in header_value):
            raise ValueError(
                f"default_headers[{name!r}] must be printable ASCII (no CR, LF or NUL)"
            )
    return headers
