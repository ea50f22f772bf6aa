"""`Meter.charge` and `AsyncMeter.charge` against the sandbox: amounts, keys and the ledger."""

from __future__ import annotations

from typing import Any

import pytest

from knai import KNAIProvider, SessionExpiredError
from knai.metering import AsyncMeter, Meter, Price, PriceTable
from knai.testing import SandboxAdmin
from tests.metering import _fixtures as fx
from tests.metering.conftest import SLUG, Flavour, wallet

pytestmark = pytest.mark.anyio

PRICES = PriceTable(
    {
        "o3*": Price(2, 8, cached_input="0.5"),
        "gpt-4o*": Price("2.5", 10, cached_input="1.25"),
        "text-embedding-3*": Price("0.02", 0),
        "claude-sonnet-4*": Price(3, 15, cached_input="0.3", cache_write="3.75"),
    },
    default=None,
)

# (response, model it names, amount at PRICES)
CASES = [
    # 93 * 2 + 1024 * 0.5 + 46 * 8 = 186 + 512 + 368
    (fx.chat_completion("chat_completion_cached_reasoning"), "o3-mini-2025-01-31", 1066),
    # 19 * 2.5 + 10 * 10 = 147.5, rounded up once
    (fx.chat_completion("chat_completion_plain"), "gpt-4o-mini-2024-07-18", 148),
    # 176 * 2 + 1152 * 0.5 + 372 * 8 = 352 + 576 + 2976
    (fx.response("response_cached_reasoning"), "o3-2025-04-16", 3904),
    # 8 * 0.02 = 0.16, rounded up
    (fx.embeddings("embeddings"), "text-embedding-3-small", 1),
    # 21 * 3 + 1800 * 0.3 + 188 * 3.75 + 393 * 15 = 63 + 540 + 705 + 5895
    (fx.message("anthropic_message_cached"), "claude-sonnet-4-20250514", 7203),
]


@pytest.mark.parametrize(("response", "model", "amount"), CASES, ids=[c[1] for c in CASES])
async def test_charges_the_priced_usage_of_the_response_under_its_model(
    flavour: Flavour, admin: SandboxAdmin, response: Any, model: str, amount: int
) -> None:
    token = wallet(admin, "alice", 100_000)
    meter = flavour.meter(PRICES)
    result = await flavour.charge(meter, token, response, idempotency_key="req-1")
    assert result is not None
    assert result.amount_tokens == amount
    [charge] = admin.charges(SLUG, "alice")
    assert (charge.amount_tokens, charge.model, charge.idempotency_key) == (amount, model, "req-1")
    assert admin.balance(SLUG, "alice") == 100_000 - amount


async def test_the_dict_form_charges_what_the_sdk_object_charges(
    flavour: Flavour, admin: SandboxAdmin
) -> None:
    token = wallet(admin, "alice", 100_000)
    meter = flavour.meter(PRICES)
    await flavour.charge(meter, token, fx.message("anthropic_message_cached"))
    await flavour.charge(meter, token, fx.raw("anthropic_message_cached"))
    assert [c.amount_tokens for c in admin.charges(SLUG, "alice")] == [7203, 7203]


async def test_a_replayed_key_charges_once(flavour: Flavour, admin: SandboxAdmin) -> None:
    token = wallet(admin, "alice", 100_000)
    meter = flavour.meter(PRICES)
    response = fx.chat_completion("chat_completion_plain")
    first = await flavour.charge(meter, token, response, idempotency_key="req-7")
    again = await flavour.charge(meter, token, response, idempotency_key="req-7")
    assert first is not None
    assert again is not None
    assert first.charge_id == again.charge_id
    assert len(admin.charges(SLUG, "alice")) == 1


async def test_the_model_given_overrides_the_responses(
    flavour: Flavour, admin: SandboxAdmin
) -> None:
    token = wallet(admin, "alice", 100_000)
    meter = flavour.meter(PRICES)
    await flavour.charge(meter, token, fx.raw("chat_completion_plain"), model="o3")
    [charge] = admin.charges(SLUG, "alice")
    assert (charge.model, charge.amount_tokens) == ("o3", 19 * 2 + 10 * 8)


async def test_a_zero_amount_sends_nothing_and_returns_none(
    flavour: Flavour, admin: SandboxAdmin
) -> None:
    token = wallet(admin, "alice", 100_000)
    meter = flavour.meter(PriceTable(default=Price(0, 0)))
    assert await flavour.charge(meter, token, fx.message("anthropic_message_cached")) is None
    assert admin.charges(SLUG, "alice") == []
    assert admin.stats().requests["charge"] == 0


@pytest.mark.parametrize(
    ("response", "kwargs", "match"),
    [
        ({"id": "x"}, {}, "dict object carries no usage"),
        ({"usage": {"prompt_tokens": 3, "completion_tokens": 1}}, {}, "model"),
        (fx.raw("chat_completion_plain"), {"model": "llama-3"}, "no price for model 'llama-3'"),
    ],
)
async def test_bad_responses_are_refused_before_anything_is_sent(
    flavour: Flavour, admin: SandboxAdmin, response: Any, kwargs: dict[str, Any], match: str
) -> None:
    token = wallet(admin, "alice", 100_000)
    with pytest.raises(ValueError, match=match):
        await flavour.charge(flavour.meter(PRICES), token, response, **kwargs)
    assert admin.stats().requests["charge"] == 0


async def test_wallet_errors_reach_the_caller(flavour: Flavour, admin: SandboxAdmin) -> None:
    info = admin.open_session(SLUG, "demo-user")
    admin.expire_session(info.session_id)
    with pytest.raises(SessionExpiredError):
        await flavour.charge(
            flavour.meter(), info.session_token, fx.message("anthropic_message_cached")
        )


def test_each_meter_refuses_the_other_flavours_client(knai_provider: KNAIProvider) -> None:
    with pytest.raises(TypeError, match="AsyncMeter"):
        Meter(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Meter for sync"):
        AsyncMeter(knai_provider)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PriceTable"):
        Meter(knai_provider, {"gpt-4o": Price(1, 1)})  # type: ignore[arg-type]
