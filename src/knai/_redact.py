"""Redaction of secrets in payloads: the one rule shared by reprs, errors and the CLI."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

__all__ = ["_redacted", "scrub", "secret_values"]

REDACTED = "<redacted>"


def _is_secret_key(key: str) -> bool:
    # session_token, sessionToken, access-token, apiKey, client_secret, password...
    key = key.lower().replace("_", "").replace("-", "")
    return key.endswith("token") or any(w in key for w in ("secret", "apikey", "password"))


def _redacted(value: Any) -> Any:
    """`value` with the values of secret-looking keys replaced, however deep."""
    return scrub(value, ())


def secret_values(value: Any) -> Iterator[str]:
    """Every string stored under a secret-looking key, however deep."""
    if isinstance(value, Mapping):
        for key, item in cast("Mapping[object, object]", value).items():
            if isinstance(key, str) and _is_secret_key(key) and isinstance(item, str) and item:
                yield item
            else:
                yield from secret_values(item)
    elif isinstance(value, list):
        for item in cast("list[object]", value):
            yield from secret_values(item)


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """`value` with every known secret string replaced, and secret-looking keys redacted."""
    if isinstance(value, str):
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED
            if isinstance(k, str) and _is_secret_key(k) and isinstance(v, str) and v
            else scrub(v, secrets)
            for k, v in cast("Mapping[object, object]", value).items()
        }
    if isinstance(value, list):
        return [scrub(v, secrets) for v in cast("list[object]", value)]
    return value
