"""Session and ChargeResult: typed fields, tolerant of the unknown, and 0.1.0's dict view."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Mapping, MutableMapping
from datetime import datetime, timezone
from typing import Any

import httpx
import pydantic
import pytest
import respx

from knai import (
    ActiveSession,
    AsyncKNAIProvider,
    ChargeResult,
    KNAIProvider,
    ResponseMeta,
    ResponseValidationError,
    Session,
    SessionWaitTimeoutError,
)
from knai._models import parse_payload
from tests.conftest import TOKEN, FakeTime
from tests.support.twin import Twin, Twins

STATUS_PATH = "/providers/session/status"
WHEN = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

SESSION_JSON: dict[str, Any] = {
    "status": "active",
    "session_token": TOKEN,
    "session_id": "ses_1",
    "provider_username": "user123",
    "expires_at": "2030-01-02T03:04:05Z",
    "plan": {"tier": "pro", "limits": [1, 2]},
}
CHARGE_JSON: dict[str, Any] = {
    "charge_id": "ch_1",
    "status": "succeeded",
    "amount_tokens": 1500,
    "model": "gpt-4",
    "remaining_balance": 8500,
    "created_at": "2030-01-02T03:04:05+00:00",
    "receipt": {"url": "https://conx.ai/r/1"},
}
MODELS = [(Session, SESSION_JSON, "plan"), (ChargeResult, CHARGE_JSON, "receipt")]


def _parse(cls: type[Session] | type[ChargeResult], payload: Any) -> Session | ChargeResult:
    return parse_payload(cls, payload, ResponseMeta(status_code=200), json.dumps(payload).encode())


# -- typed fields -------------------------------------------------------------


def test_session_known_fields_are_typed() -> None:
    session = Session.model_validate(SESSION_JSON)
    assert session.status == "active"
    assert session.session_token == TOKEN
    assert session.session_id == "ses_1"
    assert session.provider_username == "user123"
    assert session.expires_at == WHEN
    assert session.is_active is True


def test_charge_result_known_fields_are_typed() -> None:
    result = ChargeResult.model_validate(CHARGE_JSON)
    assert result.charge_id == "ch_1"
    assert result.status == "succeeded"
    assert result.amount_tokens == 1500
    assert result.model == "gpt-4"
    assert result.remaining_balance == 8500
    assert result.created_at == WHEN


@pytest.mark.parametrize(("cls", "payload", "extra"), MODELS)
def test_unknown_fields_are_kept_not_refused(cls: type[Any], payload: Any, extra: str) -> None:
    model = cls.model_validate(payload)
    assert model[extra] == payload[extra]
    assert model.model_extra == {extra: payload[extra]}


def test_missing_optional_fields_are_none() -> None:
    session = Session.model_validate({"status": "pending"})
    assert (session.session_token, session.session_id, session.expires_at) == (None, None, None)
    assert session.is_active is False
    result = ChargeResult.model_validate({})
    assert (result.charge_id, result.amount_tokens, result.created_at) == (None, None, None)
    assert len(result) == 0


# -- payloads the protocol forbids --------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [{"status": "active"}, {"status": "active", "session_token": ""}, {"status": "active", "x": 1}],
)
def test_active_session_without_token_is_response_validation_error(payload: Any) -> None:
    with pytest.raises(ResponseValidationError, match="session_token") as info:
        _parse(Session, payload)
    assert not isinstance(info.value, pydantic.ValidationError)
    assert info.value.response_body == payload
    assert info.value.raw_body == json.dumps(payload).encode()


@pytest.mark.parametrize("payload", [[SESSION_JSON], "active", None, 3])
def test_non_object_payload_is_response_validation_error(payload: Any) -> None:
    with pytest.raises(ResponseValidationError, match="JSON object"):
        _parse(Session, payload)


@pytest.mark.parametrize(
    ("payload", "field", "leak"),
    [
        ({"status": 424242}, "status", "424242"),
        ({"status": ["zzleak"]}, "status", "zzleak"),
        ({"status": None, "session_token": TOKEN}, "status", TOKEN),
        ({"session_token": TOKEN}, "status", TOKEN),
        ({"status": "active", "session_token": 987654321}, "session_token", "987654321"),
        ({"status": "active", "session_token": ["zzleak"]}, "session_token", "zzleak"),
        ({"status": "active", "session_token": {"v": "zzleak"}}, "session_token", "zzleak"),
    ],
)
def test_wrong_protocol_field_type_names_field_not_value(
    payload: Any, field: str, leak: str
) -> None:
    with pytest.raises(ResponseValidationError) as info:
        _parse(Session, payload)
    assert field in str(info.value)
    assert leak not in str(info.value)
    assert leak not in repr(info.value)


@pytest.mark.parametrize("flavor", ["sync", "async"])
@pytest.mark.anyio
async def test_client_raises_response_validation_error_for_active_without_token(
    client: KNAIProvider, aclient: AsyncKNAIProvider, api: respx.MockRouter, flavor: str
) -> None:
    route = api.get(STATUS_PATH).respond(200, json={"status": "active"})

    async def get_session() -> Session:
        if flavor == "sync":
            return client.get_session("user123")
        return await aclient.get_session("user123")

    with pytest.raises(ResponseValidationError) as info:
        await get_session()
    assert info.value.response_body == {"status": "active"}
    assert info.value.status_code == 200
    assert "session_token" in info.value.message
    assert route.call_count == 1


def test_wait_for_session_raises_at_once_on_active_without_token(
    client: KNAIProvider, api: respx.MockRouter
) -> None:
    route = api.get(STATUS_PATH).respond(200, json={"status": "active"})
    with pytest.raises(ResponseValidationError):
        client.wait_for_session("user123", poll_interval=0.01)
    assert route.call_count == 1


@pytest.mark.parametrize("body", [b'{"status":"active"}', b"[1,2]"])
def test_client_response_validation_error_carries_raw_body(
    client: KNAIProvider, api: respx.MockRouter, body: bytes
) -> None:
    api.get(STATUS_PATH).respond(200, content=body, headers={"Content-Type": "application/json"})
    with pytest.raises(ResponseValidationError) as info:
        client.get_session("user123")
    assert info.value.raw_body == body


# -- the dict view ------------------------------------------------------------


@pytest.fixture
def session() -> Session:
    return Session.model_validate(json.loads(json.dumps(SESSION_JSON)))


def test_dict_view_reads_like_the_json(session: Session) -> None:
    assert session["session_token"] == TOKEN
    assert session["plan"]["tier"] == "pro"
    assert session.get("plan") == SESSION_JSON["plan"]
    assert session.get("nope") is None
    assert session.get("nope", 7) == 7
    assert "session_id" in session
    assert "nope" not in session
    assert len(session) == len(SESSION_JSON)
    with pytest.raises(KeyError):
        session["nope"]


def test_dict_view_keys_items_values_and_iteration(session: Session) -> None:
    assert list(session.keys()) == list(SESSION_JSON.keys())
    assert list(session.values()) == list(SESSION_JSON.values())
    assert list(session.items()) == list(SESSION_JSON.items())
    assert list(session) == list(SESSION_JSON)
    assert dict(session) == SESSION_JSON
    assert {**session} == SESSION_JSON


def test_dict_view_is_a_read_only_mapping(session: Session) -> None:
    assert isinstance(session, Mapping)
    assert not isinstance(session, MutableMapping)
    with pytest.raises(TypeError):
        session["status"] = "pending"  # type: ignore[index]
    with pytest.raises(pydantic.ValidationError):
        session.status = "pending"  # type: ignore[misc]


def test_dict_view_holds_exactly_the_json_not_defaults() -> None:
    """Typed fields the server left out do not appear in the dict view."""
    assert dict(Session.model_validate({"status": "pending"})) == {"status": "pending"}


def test_to_dict_is_a_deep_copy(session: Session) -> None:
    copy = session.to_dict()
    assert copy == SESSION_JSON
    copy["status"] = "revoked"
    copy["plan"]["limits"].append(3)
    assert session["status"] == "active"
    assert session["plan"]["limits"] == [1, 2]
    assert session.to_dict() == SESSION_JSON


def test_mutating_the_validated_dict_does_not_change_the_model() -> None:
    data = {"status": "active", "session_token": TOKEN}
    session = Session.model_validate(data)
    data["status"] = "revoked"
    assert session["status"] == session.status == "active"


@pytest.mark.parametrize(("cls", "payload", "extra"), MODELS)
def test_to_json_round_trips(cls: type[Any], payload: Any, extra: str) -> None:
    model = cls.model_validate(payload)
    assert json.loads(model.to_json()) == payload
    assert json.loads(model.to_json(indent=2)) == payload
    assert cls.model_validate(json.loads(model.to_json())) == model


def test_model_validate_json_has_the_same_dict_view() -> None:
    assert dict(Session.model_validate_json(json.dumps(SESSION_JSON))) == SESSION_JSON


def test_equality_with_dicts_and_models(session: Session) -> None:
    assert session == SESSION_JSON
    assert SESSION_JSON == session  # noqa: SIM300 - the dict on the left is the point
    assert session != {**SESSION_JSON, "status": "pending"}
    assert session == Session.model_validate(SESSION_JSON)
    assert session != Session.model_validate({**SESSION_JSON, "extra": 1})
    assert ChargeResult.model_validate({"status": "x"}) != Session.model_validate({"status": "x"})
    assert session != "active"


# -- str and repr never show secrets ------------------------------------------

SECRETS = {
    "session_token": TOKEN,
    "token": "zz_plain_token",
    "refresh_token": "zz_refresh",
    "client_secret": "zz_client_secret",
    "api_key": "zz_api_key",
    "password": "zz_password",
}
NOISY = {
    "status": "active",
    "amount_tokens": 1500,
    **SECRETS,
    "nested": {"access_token": "zz_access", "items": [{"Password": "zz_pw_in_list"}]},
}
SECRET_VALUES = [*SECRETS.values(), "zz_access", "zz_pw_in_list"]


@pytest.mark.parametrize(
    "show", [str, repr, "{}".format, "{!r}".format], ids=["str", "repr", "f", "fr"]
)
def test_str_and_repr_show_payload_but_never_secrets(show: Any) -> None:
    text = show(Session.model_validate(NOISY))
    for secret in SECRET_VALUES:
        assert secret not in text
    assert "'status': 'active'" in text
    assert "'amount_tokens': 1500" in text
    assert "'session_token'" in text
    assert "nested" in text
    assert "<redacted>" in text


def test_repr_names_the_model_class() -> None:
    assert repr(ChargeResult.model_validate({"charge_id": "ch_1"})).startswith("ChargeResult(")


def test_rich_repr_never_shows_the_token(session: Session) -> None:
    assert TOKEN not in repr(list(session.__rich_repr__()))


# -- meta ---------------------------------------------------------------------


def test_hand_built_model_has_default_meta_outside_the_dict_view() -> None:
    session = Session(status="active", session_token=TOKEN)
    assert session.meta == ResponseMeta()
    assert (session.meta.status_code, session.meta.request_id, session.meta.retries) == (0, None, 0)
    assert "meta" not in session
    assert dict(session) == {"status": "active", "session_token": TOKEN}


def test_server_field_named_meta_stays_in_the_dict_view() -> None:
    session = Session.model_validate({"status": "pending", "meta": {"page": 1}})
    assert session["meta"] == {"page": 1}
    assert isinstance(session.meta, ResponseMeta)


def test_client_result_meta_describes_the_response(
    client: KNAIProvider, api: respx.MockRouter
) -> None:
    api.get(STATUS_PATH).respond(200, json={"status": "pending"}, headers={"X-Request-Id": "r9"})
    session = client.get_session("user123")
    assert (session.meta.status_code, session.meta.request_id, session.meta.retries) == (
        200,
        "r9",
        0,
    )
    assert "meta" not in session


# -- lenient guessed fields ---------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "field", "raw"),
    [
        (Session, "expires_at", "garbage"),
        (Session, "expires_at", "2030-13-45T99:00:00Z"),
        (Session, "session_id", 7),
        (Session, "provider_username", ["user123"]),
        (ChargeResult, "charge_id", 12345),
        (ChargeResult, "created_at", "yesterday"),
        (ChargeResult, "amount_tokens", "lots"),
        (ChargeResult, "remaining_balance", {"tokens": 5}),
        (ChargeResult, "status", ["succeeded"]),
        (ChargeResult, "model", None),
    ],
)
def test_guessed_field_of_unexpected_type_is_none_but_kept_raw(
    cls: type[Any], field: str, raw: Any
) -> None:
    payload = {"status": "pending", field: raw} if cls is Session else {field: raw}
    model = _parse(cls, payload)
    assert getattr(model, field) is None
    assert model[field] == raw


def test_validation_error_keeps_no_token_in_its_body_or_raw_bytes() -> None:
    """Error trackers keep exceptions: a rejected payload's token is redacted from both."""
    payload = {"status": 5, "session_token": TOKEN}
    with pytest.raises(ResponseValidationError) as info:
        _parse(Session, payload)
    assert info.value.response_body == {"status": 5, "session_token": "<redacted>"}
    assert TOKEN.encode() not in info.value.raw_body
    assert b"<redacted>" in info.value.raw_body


# -- ActiveSession: the typed path to a token -----------------------------------


@pytest.mark.anyio
async def test_active_status_parses_as_active_session_and_pending_does_not(
    twin: Twin, api: respx.MockRouter
) -> None:
    """`isinstance(session, ActiveSession)` is how a get_session caller narrows."""
    api.get(STATUS_PATH).mock(
        side_effect=[
            httpx.Response(200, json={"status": "pending"}),
            httpx.Response(200, json=SESSION_JSON),
        ]
    )
    pending = await twin.get_session("user123")
    active = await twin.get_session("user123")
    assert type(pending) is Session
    assert not isinstance(pending, ActiveSession)
    assert isinstance(active, ActiveSession)
    assert active.session_token == TOKEN
    assert active.meta.status_code == 200
    assert dict(active) == SESSION_JSON


@pytest.mark.anyio
async def test_wait_for_session_returns_an_active_session(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.get(STATUS_PATH).mock(
        side_effect=[
            httpx.Response(200, json={"status": "pending"}),
            httpx.Response(200, json=SESSION_JSON),
        ]
    )
    session = await twin.wait_for_session("user123", poll_interval=0.01)
    assert isinstance(session, ActiveSession)
    assert session.session_token == TOKEN


def test_every_way_of_building_an_active_session_gives_the_subclass() -> None:
    built = [
        Session(status="active", session_token=TOKEN),
        Session.model_validate({"status": "active", "session_token": TOKEN}),
        Session.model_validate_json(json.dumps({"status": "active", "session_token": TOKEN})),
        pydantic.TypeAdapter(Session).validate_python({"status": "active", "session_token": TOKEN}),
        ActiveSession(status="active", session_token=TOKEN),
    ]
    for session in built:
        assert type(session) is ActiveSession
        assert session == built[0]
        assert session.is_active


def test_active_session_equals_the_session_with_the_same_json() -> None:
    assert ActiveSession(status="active", session_token=TOKEN) == Session.model_construct(
        status="active", session_token=TOKEN
    )


def test_active_session_refuses_a_payload_that_is_not_active() -> None:
    with pytest.raises(pydantic.ValidationError, match="status"):
        ActiveSession.model_validate({"status": "pending", "session_token": TOKEN})


@pytest.mark.parametrize("status", ["suspended", "ACTIVE", "active "])
def test_status_the_sdk_does_not_know_reads_unknown_and_stays_raw(status: str) -> None:
    session = _parse(Session, {"status": status, "session_token": TOKEN})
    assert session.status == "unknown"
    assert session["status"] == status
    assert not session.is_active
    assert not isinstance(session, ActiveSession)
    assert json.loads(session.to_json())["status"] == status


@pytest.mark.parametrize("status", ["pending", "active", "inactive", "expired", "revoked"])
def test_known_statuses_read_as_sent(status: str) -> None:
    assert Session.model_validate({"status": status, "session_token": TOKEN}).status == status


@pytest.mark.parametrize("model", [Session.model_validate(SESSION_JSON), ChargeResult()])
def test_models_are_frozen(model: Session | ChargeResult) -> None:
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        model.status = "expired"  # type: ignore[misc]
    assert type(model).model_config.get("frozen") is True


# -- one serialisation: the JSON the server sent --------------------------------

WIRE = [
    (Session, SESSION_JSON),
    (Session, {"status": "pending", "expires_at": "2030-01-02T03:04:05Z"}),
    (Session, {"status": "suspended", "session_id": 7}),
    (ChargeResult, CHARGE_JSON),
    (ChargeResult, {"amount_tokens": "lots", "created_at": "2030-01-02T03:04:05Z"}),
]


@pytest.mark.parametrize(("cls", "payload"), WIRE)
def test_model_dump_is_the_wire_json(cls: type[Any], payload: Any) -> None:
    """No rewritten timestamps, no nulls for fields the server never sent."""
    model = _parse(cls, payload)
    assert model.model_dump() == payload
    assert model.model_dump(mode="json") == payload
    assert json.loads(model.model_dump_json()) == payload


@pytest.mark.parametrize(("cls", "payload"), WIRE)
def test_every_round_trip_gives_an_equal_model_and_the_same_json(
    cls: type[Any], payload: Any
) -> None:
    model = _parse(cls, payload)
    adapter = pydantic.TypeAdapter(cls)
    copies = [
        pickle.loads(pickle.dumps(model)),  # noqa: S301 - our own bytes
        copy.deepcopy(model),
        copy.copy(model),
        model.model_copy(),
        model.model_copy(deep=True),
        cls.model_validate(model.model_dump()),
        cls.model_validate_json(model.model_dump_json()),
        cls.model_validate(model.to_dict()),
        cls.model_validate_json(model.to_json()),
        adapter.validate_python(adapter.dump_python(model)),
        adapter.validate_json(adapter.dump_json(model)),
    ]
    for again in copies:
        assert again == model
        assert type(again) is type(model)
        assert again.to_dict() == payload
        assert json.loads(again.to_json()) == payload


class _UserRecord(pydantic.BaseModel):
    """A user's own model holding SDK results (cached in Redis, say)."""

    user: str
    session: Session
    last_charge: ChargeResult | None = None


def test_results_nested_in_a_user_model_round_trip_as_wire_json() -> None:
    record = _UserRecord(
        user="u1",
        session=_parse(Session, SESSION_JSON),
        last_charge=_parse(ChargeResult, CHARGE_JSON),
    )
    dumped = json.loads(record.model_dump_json())
    assert dumped == {"user": "u1", "session": SESSION_JSON, "last_charge": CHARGE_JSON}
    again = _UserRecord.model_validate_json(record.model_dump_json())
    assert again == record
    assert isinstance(again.session, ActiveSession)
    assert _UserRecord.model_validate(record.model_dump()) == record


@pytest.mark.anyio
async def test_a_fastapi_response_is_the_wire_json() -> None:
    import fastapi

    app = fastapi.FastAPI()
    session = _parse(Session, SESSION_JSON)
    result = _parse(ChargeResult, CHARGE_JSON)

    @app.get("/session", response_model=Session)
    def get_session() -> Session:
        return session

    @app.get("/charge")
    def get_charge() -> ChargeResult:
        return result

    @app.get("/record")
    def get_record() -> _UserRecord:
        return _UserRecord(user="u1", session=session, last_charge=result)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.localhost") as http:
        assert (await http.get("/session")).json() == SESSION_JSON
        assert (await http.get("/charge")).json() == CHARGE_JSON
        assert (await http.get("/record")).json() == {
            "user": "u1",
            "session": SESSION_JSON,
            "last_charge": CHARGE_JSON,
        }


def test_hand_built_model_keeps_the_json_form_of_its_values() -> None:
    session = Session(status="pending", expires_at=WHEN)
    assert session.to_dict() == {"status": "pending", "expires_at": "2030-01-02T03:04:05Z"}
    assert Session.model_validate_json(session.to_json()) == session


def test_model_construct_has_a_dict_view_of_its_values() -> None:
    session = Session.model_construct(status="pending", plan="pro")
    assert dict(session) == {"status": "pending", "plan": "pro"}
    assert session.to_json() == '{"status": "pending", "plan": "pro"}'


# -- model_copy(update=...) cannot make a result say two things -----------------


@pytest.mark.parametrize(
    ("model", "update"),
    [
        (Session.model_validate(SESSION_JSON), {"status": "expired"}),
        (ChargeResult.model_validate(CHARGE_JSON), {"amount_tokens": 1}),
        (ChargeResult.model_validate(CHARGE_JSON), {"receipt": None}),
    ],
)
@pytest.mark.parametrize("deep", [False, True])
def test_model_copy_with_update_is_refused(
    model: Session | ChargeResult, update: dict[str, Any], deep: bool
) -> None:
    with pytest.raises(TypeError, match="model_validate"):
        model.model_copy(update=update, deep=deep)


def test_model_dump_include_and_exclude_apply_to_the_wire_json() -> None:
    """Excluding the token before logging a dump must leave it out."""
    session = _parse(Session, {**SESSION_JSON, "note": None})
    assert "session_token" not in session.model_dump(exclude={"session_token"})
    assert TOKEN not in session.model_dump_json(exclude={"session_token"})
    assert session.model_dump(include={"status", "plan"}) == {
        "status": "active",
        "plan": SESSION_JSON["plan"],
    }
    assert session.model_dump(exclude={"plan": {"limits"}})["plan"] == {"tier": "pro"}
    assert session.model_dump(include={"plan": {"tier"}}) == {"plan": {"tier": "pro"}}
    assert "note" not in session.model_dump(exclude_none=True)
    assert session.model_dump()["note"] is None
    record = _UserRecord(user="u1", session=session)
    assert TOKEN not in record.model_dump_json(exclude={"session": {"session_token"}})


@pytest.mark.anyio
async def test_wait_timeout_names_the_status_as_sent_not_unknown(
    twins: Twins, api: respx.MockRouter, fake_time: FakeTime
) -> None:
    api.get(STATUS_PATH).respond(200, json={"status": "suspended"})
    twin = twins.make(retry=fake_time.policy())  # the deadline passes on fake time, at once
    with pytest.raises(SessionWaitTimeoutError, match="'suspended'"):
        await twin.wait_for_session("user123", poll_interval=0.01, timeout=0.05)
