"""Redaction of secrets in payloads: the one rule shared by reprs, errors and the CLI.

A secret is found in every form a server can echo it in: as sent, and inside
a JSON string with any of its characters escaped (`\\u0073k_...`, `\\/`).
One shorter than `WHOLE_TOKEN_BELOW` characters is replaced only where it
stands alone, so a one-letter token cannot turn "Connection refused" into
"Connec<redacted>ion refused".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

__all__ = ["_redacted", "scrub", "scrub_bytes", "secret_values"]

REDACTED = "<redacted>"
#: Secrets shorter than this are scrubbed as whole tokens only (see the module docstring).
WHOLE_TOKEN_BELOW = 8
# A short secret next to one of these is part of a longer word, not a token of its own.
_WORD_CHARS = r"A-Za-z0-9_\-"


def _char(c: str) -> str:
    """A regex for `c` as written, or JSON-escaped (`\\uXXXX` in either case, `\\/`, `\\"`)."""
    forms = [re.escape(c)]
    code = ord(c)
    if code < 0x10000:
        hex_digits = "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{code:04x}")
        forms.append(r"\\u" + hex_digits)
    if c in '/"\\':
        forms.append(r"\\" + re.escape(c))
    return forms[0] if len(forms) == 1 else "(?:" + "|".join(forms) + ")"


@functools.lru_cache(maxsize=64)
def _pattern(secret: str) -> str:
    body = "".join(_char(c) for c in secret)
    if len(secret) < WHOLE_TOKEN_BELOW:
        body = rf"(?<![{_WORD_CHARS}]){body}(?![{_WORD_CHARS}])"
    return body


@functools.lru_cache(maxsize=64)
def _text_pattern(secret: str) -> re.Pattern[str]:
    return re.compile(_pattern(secret))


@functools.lru_cache(maxsize=64)
def _bytes_pattern(secret: str) -> re.Pattern[bytes]:
    return re.compile(_pattern(secret).encode("utf-8"))


def _may_hold(value: str | bytes, secret: str) -> bool:
    """False when `value` cannot hold `secret` in any form: the common case, found fast."""
    if isinstance(value, bytes):
        return b"\\" in value or secret.encode("utf-8", "replace") in value
    return "\\" in value or secret in value


def scrub_text(value: str, secrets: Iterable[str]) -> str:
    """`value` with each of `secrets`, in any form, replaced by REDACTED."""
    for secret in secrets:
        if secret and _may_hold(value, secret):
            value = _text_pattern(secret).sub(REDACTED, value)
    return value


def scrub_bytes(raw: bytes, secrets: Iterable[str]) -> bytes:
    """`raw` (a body as received) with each of `secrets`, in any form, replaced."""
    for secret in secrets:
        if secret and _may_hold(raw, secret):
            raw = _bytes_pattern(secret).sub(REDACTED.encode(), raw)
    return raw


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
        return scrub_text(value, secrets)
    if isinstance(value, Mapping):
        # Keys too: a server may echo a secret as a key ({"sk_live_...": ...}).
        return {
            scrub_text(k, secrets) if isinstance(k, str) else k: REDACTED
            if isinstance(k, str) and _is_secret_key(k) and isinstance(v, str) and v
            else scrub(v, secrets)
            for k, v in cast("Mapping[object, object]", value).items()
        }
    if isinstance(value, list):
        return [scrub(v, secrets) for v in cast("list[object]", value)]
    return value
