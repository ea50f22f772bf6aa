"""Typed, validated payloads that still read like the dicts 0.1.0 returned.

`Session` and `ChargeResult` are pydantic models with the fields the protocol
knows typed; everything else the server sent stays reachable through a
read-only dict view of exactly that JSON (`session["session_token"]`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from ._errors import ResponseValidationError
from ._redact import _redacted, secret_values
from ._types import ResponseMeta

__all__ = ["ChargeResult", "Session", "parse_payload"]

_T = TypeVar("_T")
_PayloadT = TypeVar("_PayloadT", bound="_Payload")


_NO_RESPONSE = ResponseMeta()


def _none_if_invalid(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except (ValidationError, ValueError, TypeError):
        return None


# Fields the real service does not document: typed when they parse, None when
# they do not, and always available unchanged through the dict view.
Lenient = Annotated[_T | None, WrapValidator(_none_if_invalid)]


# Passed as validation context by the transport: the dict came from json.loads
# and belongs to the model, so it need not be copied.
_OWNED = object()


class _Payload(BaseModel, Mapping[str, Any]):
    """A validated model that is also a read-only view of the JSON received."""

    model_config = ConfigDict(extra="allow", frozen=True)

    # Defaults of None: pydantic deep-copies private defaults on every instance.
    _raw: dict[str, Any] = PrivateAttr(default=None)  # type: ignore[arg-type]
    _meta: ResponseMeta | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(
        cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        model = handler(data)
        if isinstance(model, _Payload):
            if isinstance(data, dict):
                model._raw = data if info.context is _OWNED else copy.deepcopy(data)
            elif isinstance(data, _Payload):
                model._raw = data._raw
            else:
                model._raw = model.model_dump(mode="json", exclude_unset=True)
        return model

    @property
    def meta(self) -> ResponseMeta:
        """Status code, headers, request id, idempotency key and retries of the response."""
        return self._meta or _NO_RESPONSE

    # -- the dict view (what 0.1.0 returned) ---------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Return the JSON field `key`, or `default` when it is absent."""
        return self._raw.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def keys(self) -> KeysView[str]:
        """The JSON field names, as `dict.keys()`."""
        return self._raw.keys()

    def values(self) -> ValuesView[Any]:
        """The JSON field values, as `dict.values()`."""
        return self._raw.values()

    def items(self) -> ItemsView[str, Any]:
        """The JSON fields, as `dict.items()`."""
        return self._raw.items()

    def to_dict(self) -> dict[str, Any]:
        """Return a deep copy of exactly the JSON object the server sent."""
        return copy.deepcopy(self._raw)

    def to_json(self, *, indent: int | None = None) -> str:
        """Return the JSON object the server sent, serialised again."""
        return json.dumps(self._raw, indent=indent, ensure_ascii=False)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Payload):
            return type(self) is type(other) and self._raw == other._raw
        if isinstance(other, Mapping):
            return self._raw == dict(other)
        return NotImplemented

    def __str__(self) -> str:
        return str(_redacted(self._raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_redacted(self._raw)!r})"

    def __repr_args__(self) -> Any:
        # What pydantic's rich / devtools / pretty representations print.
        return list(_redacted(self._raw).items())


class Session(_Payload):
    """The session-status payload of `GET /providers/session/status`.

    Read fields as attributes (`session.status`) or as 0.1.0's dict
    (`session["session_token"]`). A session is usable once `is_active`.

    Attributes:
        status: `"active"` once the user's session can be charged; other
            values (e.g. `"pending"`) mean not yet.
        session_token: The secret token to charge with; present when active.
        session_id: The session's id, if the server sends one.
        provider_username: The user the session belongs to, if sent.
        expires_at: When the session expires, if sent.
    """

    status: str
    session_token: str | None = None
    session_id: Lenient[str] = None
    provider_username: Lenient[str] = None
    expires_at: Lenient[datetime] = None

    @model_validator(mode="after")
    def _active_has_token(self) -> Session:
        if self.status == "active" and not self.session_token:
            raise ValueError("an active session must carry a session_token")
        return self

    @property
    def is_active(self) -> bool:
        """True when `status == "active"`: the session can be charged."""
        return self.status == "active"


class ChargeResult(_Payload):
    """The response of `POST /charge/authorize`.

    The real service documents none of its fields, so each typed attribute is
    None when absent or not of the expected type; the dict view always holds
    exactly what was sent.

    Attributes:
        charge_id: The charge's id, if sent.
        status: The charge's status (e.g. `"succeeded"`), if sent.
        amount_tokens: The amount charged, if sent.
        model: The model charged for, if sent.
        remaining_balance: The wallet balance after the charge, if sent.
        created_at: When the charge was made, if sent.
    """

    charge_id: Lenient[str] = None
    status: Lenient[str] = None
    amount_tokens: Lenient[int] = None
    model: Lenient[str] = None
    remaining_balance: Lenient[int] = None
    created_at: Lenient[datetime] = None


def _describe(exc: ValidationError) -> str:
    # Built from locations and messages only: the inputs may hold secrets.
    parts = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_payload(
    cls: type[_PayloadT], payload: Any, meta: ResponseMeta, raw_body: bytes
) -> _PayloadT:
    """Validate a decoded JSON body as `cls`, or raise `ResponseValidationError`."""
    if not isinstance(payload, dict):
        raise ResponseValidationError(
            f"expected a JSON object, got {type(payload).__name__}",
            meta.status_code,
            raw_body=raw_body,
            request_id=meta.request_id,
            headers=meta.headers,
            idempotency_key=meta.idempotency_key,
        )
    try:
        model = cls.model_validate(payload, context=_OWNED)
    except ValidationError as exc:
        # The error outlives the call (error trackers keep it): no token in it.
        for secret in secret_values(payload):
            raw_body = raw_body.replace(secret.encode(), b"<redacted>")
        raise ResponseValidationError(
            f"invalid {cls.__name__} payload: {_describe(exc)}",
            meta.status_code,
            _redacted(payload),
            raw_body=raw_body,
            request_id=meta.request_id,
            headers=meta.headers,
            idempotency_key=meta.idempotency_key,
        ) from None
    model._meta = meta
    return model
