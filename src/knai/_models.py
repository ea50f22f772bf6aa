"""Typed, validated payloads that still read like the dicts 0.1.0 returned.

`Session` and `ChargeResult` are pydantic models with the fields the protocol
knows typed; everything else the server sent stays reachable through a
read-only dict view of exactly that JSON (`session["session_token"]`).

One serialisation: the JSON the server sent. `model_dump()`, `model_dump_json()`,
`to_dict()`, `to_json()`, pickling, a `TypeAdapter` and a model nested in yours
all give back that JSON, and validating it again gives an equal model.
"""

from __future__ import annotations

import copy
import json
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, get_args

from pydantic import (
    BaseModel,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from ._dump import select, wire_json
from ._errors import ResponseValidationError
from ._json import JSONValue
from ._redact import _redacted, scrub, scrub_bytes, secret_values
from ._types import ResponseMeta

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ActiveSession", "ChargeResult", "Session", "SessionStatus", "parse_payload"]

_PayloadT = TypeVar("_PayloadT", bound="Payload")

SessionStatus = Literal["pending", "active", "inactive", "expired", "revoked", "unknown"]
"""The session statuses the SDK knows, the type of `Session.status`.

Any other status the service sends reads as `"unknown"` there, and
`session["status"]` keeps it as sent.
"""
_KNOWN_STATUSES: frozenset[str] = frozenset(get_args(SessionStatus))

_NO_RESPONSE = ResponseMeta()

# Passed as validation context by the transport: the dict came from json.loads
# and belongs to the model, so it need not be copied.
_OWNED = object()


def _lenient(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    # Fields the real service does not document: typed when they parse, None
    # when they do not, and always available unchanged through the dict view.
    try:
        return handler(value)
    except (ValidationError, ValueError, TypeError):
        return None


class Payload(BaseModel, Mapping[str, Any], extra="allow", frozen=True):
    """A validated model that is also a read-only view of the JSON received."""

    # Defaults of None: pydantic deep-copies private defaults on every instance.
    _raw: dict[str, Any] | None = PrivateAttr(default=None)
    _meta: ResponseMeta | None = PrivateAttr(default=None)
    # The payload as str()/repr() show it, when it echoes the request's own
    # secrets (which no key name gives away); None: the redacted JSON.
    _shown: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        model = handler(data)
        if isinstance(data, Payload):
            _set_private(model, "_raw", data._json)
        elif isinstance(data, dict) and info.context is _OWNED:
            _set_private(model, "_raw", cast("dict[str, Any]", data))
        elif isinstance(data, Mapping):
            # A hand-built payload may hold datetimes: keep its JSON form, so
            # the dict view always reads like what a server would send.
            _set_private(model, "_raw", wire_json(data))  # pyright: ignore[reportUnknownArgumentType]
        return model

    @property
    def _json(self) -> dict[str, Any]:
        raw = self._raw
        if raw is None:
            # model_construct() skips validation: its fields are the payload.
            fields = {k: v for k, v in self.__dict__.items() if k in self.model_fields_set}
            raw = wire_json({**fields, **(self.__pydantic_extra__ or {})})
            _set_private(self, "_raw", raw)
        return raw

    @model_serializer(mode="wrap")
    def _dumpwire_json(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        # Every serialisation (model_dump, model_dump_json, TypeAdapter, a model
        # nested in the user's, a FastAPI response) is the JSON the server sent,
        # less what the caller's include / exclude / exclude_none leave out (a
        # caller excluding session_token before logging must not get it back).
        return select(self._json, info.include, info.exclude, info.exclude_none)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Copy the model; `update` is refused, as the payload is what the server sent.

        Raises:
            TypeError: `update` was given. Validate a changed dict instead:
                `Session.model_validate({**session.to_dict(), "status": "expired"})`.
        """
        if update:
            raise TypeError(
                f"{type(self).__name__} is the JSON the server sent: model_copy(update=...)"
                f" is refused; use {type(self).__name__}.model_validate({{**model.to_dict(),"
                " ...}) to build a changed one"
            )
        return super().model_copy(deep=deep)

    @property
    def meta(self) -> ResponseMeta:
        """Status code, headers, request id, idempotency key and retries of the response."""
        return self._meta or _NO_RESPONSE

    # -- the dict view (what 0.1.0 returned) ---------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._json[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Return the JSON field `key`, or `default` when it is absent."""
        return self._json.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._json

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)

    def keys(self) -> KeysView[str]:
        """The JSON field names, as `dict.keys()`."""
        return self._json.keys()

    def values(self) -> ValuesView[Any]:
        """The JSON field values, as `dict.values()`."""
        return self._json.values()

    def items(self) -> ItemsView[str, Any]:
        """The JSON fields, as `dict.items()`."""
        return self._json.items()

    def to_dict(self) -> dict[str, Any]:
        """Return a deep copy of exactly the JSON object the server sent."""
        return copy.deepcopy(self._json)

    def to_json(self, *, indent: int | None = None) -> str:
        """Return the JSON object the server sent, serialised again."""
        return json.dumps(self._json, indent=indent, ensure_ascii=False)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Payload):
            return _family(self) is _family(other) and self._json == other._json
        if isinstance(other, Mapping):
            return self._json == dict(other)  # pyright: ignore[reportUnknownArgumentType]
        return NotImplemented

    def _display(self) -> dict[str, Any]:
        shown = self._shown
        return shown if shown is not None else cast("dict[str, Any]", _redacted(self._json))

    def __str__(self) -> str:
        return str(self._display())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._display()!r})"

    def __repr_args__(self) -> Any:
        # What pydantic's rich / devtools / pretty representations print.
        return list(self._display().items())


def _set_private(model: BaseModel, name: str, value: object) -> None:
    # Private attributes may change on a frozen model (pydantic allows it);
    # this says so to type checkers, which see every annotation as a field.
    private = model.__pydantic_private__
    if private is None:
        object.__setattr__(model, "__pydantic_private__", {name: value})
    else:
        private[name] = value


def _family(model: Payload) -> type[Payload]:
    # An ActiveSession is a Session that is active: equal to one with the same JSON.
    return Session if isinstance(model, Session) else type(model)


class Session(Payload, frozen=True):
    """The session-status payload of `GET /providers/session/status`.

    Read fields as attributes (`session.status`) or as 0.1.0's dict
    (`session["session_token"]`). Parsing an active payload (the client,
    `Session.model_validate`, a `TypeAdapter`) gives an `ActiveSession`, whose
    `session_token` is a `str`: narrow with `isinstance(session, ActiveSession)`.

    Attributes:
        status: One of `SessionStatus`; a status the SDK does not know reads
            `"unknown"` here, and `session["status"]` keeps it as sent.
        session_token: The secret token to charge with; present when active.
        session_id: The session's id, if the server sends one.
        provider_username: The user the session belongs to, if sent.
        expires_at: When the session expires, if sent.
    """

    status: SessionStatus
    session_token: str | None = None
    session_id: str | None = None
    provider_username: str | None = None
    expires_at: datetime | None = None

    def __new__(cls, *args: Any, **data: Any) -> Self:
        # Session(status="active", ...) builds an ActiveSession, as parsing does.
        if cls is Session and data.get("status") == "active" and data.get("session_token"):
            return super().__new__(ActiveSession)  # type: ignore[return-value]
        return super().__new__(cls)

    @field_validator("status", mode="before")
    @classmethod
    def _known_status(cls, value: object) -> object:
        if isinstance(value, str) and value not in _KNOWN_STATUSES:
            return "unknown"
        return value

    _lenient_fields = field_validator("session_id", "provider_username", "expires_at", mode="wrap")(
        _lenient
    )

    @model_validator(mode="after")
    def _active_has_token(self) -> Self:
        if self.status == "active" and not self.session_token:
            raise ValueError("an active session must carry a session_token")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _narrow(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        model = handler(data)
        if cls is Session and type(model) is Session and model.status == "active":
            active = ActiveSession.__new__(ActiveSession)
            active.__setstate__(model.__getstate__())
            return cast("Self", active)  # cls is Session here, and an ActiveSession is one
        return model

    @property
    def is_active(self) -> bool:
        """True when `status == "active"`: the session can be charged."""
        return self.status == "active"


class ActiveSession(Session, frozen=True):
    """A `Session` that is active: what `wait_for_session` returns.

    Its `session_token` is a `str`, so `provider.charge(session.session_token,
    ...)` type-checks. `get_session` returns a `Session`; narrow it with
    `isinstance(session, ActiveSession)`.

    Attributes:
        status: Always `"active"`.
        session_token: The secret token to charge with.
    """

    # Narrowing a frozen (read-only) field is sound; pyright checks it as if
    # the field could be assigned, and wants the base class's default kept.
    status: Literal["active"]  # pyright: ignore[reportIncompatibleVariableOverride]
    session_token: str  # pyright: ignore[reportIncompatibleVariableOverride, reportGeneralTypeIssues]


class ChargeResult(Payload, frozen=True):
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

    charge_id: str | None = None
    status: str | None = None
    amount_tokens: int | None = None
    model: str | None = None
    remaining_balance: int | None = None
    created_at: datetime | None = None

    _lenient_fields = field_validator(
        "charge_id",
        "status",
        "amount_tokens",
        "model",
        "remaining_balance",
        "created_at",
        mode="wrap",
    )(_lenient)


def _describe(exc: ValidationError) -> str:
    # Built from locations and messages only: the inputs may hold secrets.
    parts: list[str] = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_payload(
    cls: type[_PayloadT],
    payload: JSONValue,
    meta: ResponseMeta,
    raw_body: bytes,
    secrets: tuple[str, ...] = (),
) -> _PayloadT:
    """Validate a decoded JSON body as `cls`, or raise `ResponseValidationError`.

    `secrets` (the request's API key and session token) never show in the
    model's `str()`/`repr()`, even where the server echoes them.
    """
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
        raw_body = scrub_bytes(raw_body, secret_values(payload))  # in any form it was sent
        raise ResponseValidationError(
            f"invalid {cls.__name__} payload: {_describe(exc)}",
            meta.status_code,
            _redacted(payload),
            raw_body=raw_body,
            request_id=meta.request_id,
            headers=meta.headers,
            idempotency_key=meta.idempotency_key,
        ) from None
    _set_private(model, "_meta", meta)
    if secrets:
        shown = scrub(payload, secrets)
        if shown != _redacted(payload):  # rare: the body echoes a secret of the request
            _set_private(model, "_shown", shown)
    return model
