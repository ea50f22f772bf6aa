"""An echoed secret is scrubbed from every field of every error, in whatever form it came back.

A server may echo the API key or the session token as sent, or inside a JSON
string with its characters escaped (`\\u0073k_...`, `\\/`): json decodes both
to the secret, so both must go, from the parsed body and from the raw bytes
alike, whatever the body's shape and status. A secret too short to be told
from a piece of a word is scrubbed only where it stands alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from knai import KNAIError, ResponseValidationError
from tests.conftest import API_KEY
from tests.support.twin import CHARGE, STATUS, Twin, Twins, reply

pytestmark = pytest.mark.anyio

SLASHED_TOKEN = "sess/tok_9b2e4d6f8a0c/x"  # printable ASCII: a token may carry a slash


def forms(secret: str) -> list[str]:
    """The ways JSON can carry `secret` in a string: as is, and escaped."""
    every = "".join(f"\\u{ord(c):04x}" for c in secret)
    return [
        secret,
        every,
        every.upper().replace("\\U", "\\u"),  # hex digits in upper case
        f"\\u{ord(secret[0]):04X}{secret[1:]}",  # one character escaped
        secret.replace("/", "\\/"),  # json.dumps of old, and PHP, escape slashes
    ]


def bodies(form: str) -> dict[str, tuple[int, bytes]]:
    """Answers of every shape that echo `form` (bytes as the server sends them)."""
    echo = form.encode()
    return {
        "2xx array": (200, b'["bad key ' + echo + b'"]'),
        "2xx string": (200, b'"' + echo + b'"'),
        "2xx nested object off the schema": (
            200,
            b'{"status": 5, "charge_id": 7, "detail": {"seen": ["' + echo + b'"]}}',
        ),
        "2xx not JSON": (200, b"<html>" + echo + b"</html>"),
        "402": (402, b'{"error": "no funds for ' + echo + b'", "echo": {"k": ["' + echo + b'"]}}'),
        "503": (503, b'{"message": "down for ' + echo + b'"}'),
        "500 not JSON": (500, b"Internal error: " + echo),
    }


def strings(value: Any) -> Iterator[str]:
    """Every string inside `value`, however deep (bytes decoded as they are)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("latin-1")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)


def every_field(error: KNAIError) -> list[str]:
    """What an error tracker keeps of `error` and its causes."""
    seen: list[str] = []
    exc: BaseException | None = error
    while exc is not None:
        seen += [str(exc), repr(exc), *strings(exc.args)]
        if isinstance(exc, KNAIError):
            seen += [*strings(exc.message), *strings(exc.response_body)]
            seen += [f"{k}: {v}" for k, v in (exc.headers or httpx.Headers()).multi_items()]
        if isinstance(exc, ResponseValidationError):
            seen += [*strings(exc.raw_body)]
        exc = exc.__cause__ or exc.__context__
    return seen


def assert_scrubbed(error: KNAIError, secret: str) -> None:
    for text in every_field(error):
        for form in forms(secret):
            assert form not in text, f"{form!r} survives in {text!r}"


@pytest.mark.parametrize("form", range(5), ids=["as-sent", "u-lower", "u-upper", "one", "slash"])
@pytest.mark.parametrize("shape", list(bodies("x")))
async def test_an_echoed_api_key_is_scrubbed_in_every_form_and_shape(
    twin: Twin, api: respx.MockRouter, form: int, shape: str
) -> None:
    status, body = bodies(forms(API_KEY)[form])[shape]
    echo = forms(API_KEY)[form]
    api.get(STATUS).mock(return_value=reply(status, body, {"x-echo": echo, "x-seen": echo}))
    with pytest.raises(KNAIError) as info:
        await twin.get_session("user123")
    assert_scrubbed(info.value, API_KEY)


# A charge's answer has no schema to fail (every field is optional, kept raw when odd).
CHARGE_SHAPES = [shape for shape in bodies("x") if "schema" not in shape]


@pytest.mark.parametrize("form", range(5), ids=["as-sent", "u-lower", "u-upper", "one", "slash"])
@pytest.mark.parametrize("shape", CHARGE_SHAPES)
async def test_an_echoed_session_token_is_scrubbed_in_every_form_and_shape(
    twin: Twin, api: respx.MockRouter, form: int, shape: str
) -> None:
    status, body = bodies(forms(SLASHED_TOKEN)[form])[shape]
    api.post(CHARGE).mock(return_value=reply(status, body))
    with pytest.raises(KNAIError) as info:
        await twin.charge(SLASHED_TOKEN, amount_tokens=10, model="gpt-4")
    assert_scrubbed(info.value, SLASHED_TOKEN)
    assert_scrubbed(info.value, API_KEY)


async def test_a_one_character_token_does_not_mangle_the_message(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.post(CHARGE).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(KNAIError) as info:
        await twin.charge("t", amount_tokens=10, model="gpt-4", max_retries=0)
    assert "Connection refused" in str(info.value)


async def test_a_one_character_token_is_still_scrubbed_where_it_stands_alone(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.post(CHARGE).mock(return_value=reply(402, {"error": "token=t is out of funds", "t": "t"}))
    with pytest.raises(KNAIError) as info:
        await twin.charge("t", amount_tokens=10, model="gpt-4")
    assert str(info.value) == "token=<redacted> is out of funds (HTTP 402)"
    assert info.value.response_body == {
        "error": "token=<redacted> is out of funds",
        "<redacted>": "<redacted>",  # the key was the token too
    }


@pytest.mark.parametrize("shape", list(bodies("x")))
async def test_a_short_api_key_is_scrubbed_as_a_whole_token(
    twins: Twins, api: respx.MockRouter, shape: str
) -> None:
    status, body = bodies("k9")[shape]
    api.get(STATUS).mock(return_value=reply(status, body))
    with pytest.raises(KNAIError) as info:
        await twins.make(provider_api_key="k9").get_session("user123")
    assert_scrubbed(info.value, "k9")


@pytest.mark.parametrize("status", [400, 402, 409, 503])
async def test_a_secret_echoed_as_a_json_key_is_scrubbed_from_the_error(
    twin: Twin, api: respx.MockRouter, status: int
) -> None:
    body = {API_KEY: "x", SLASHED_TOKEN: 1, "error": "refused"}
    api.post(CHARGE).mock(return_value=reply(status, body))
    with pytest.raises(KNAIError) as caught:
        await twin.charge(SLASHED_TOKEN, amount_tokens=10, model="gpt-4", max_retries=0)
    assert_scrubbed(caught.value, API_KEY)
    assert_scrubbed(caught.value, SLASHED_TOKEN)


async def test_a_success_that_echoes_the_key_and_token_prints_neither(
    twin: Twin, api: respx.MockRouter
) -> None:
    """The 0.1.0 README prints a result: an echo no key name gives away is hidden too."""
    echo = {
        "charge_id": "ch_1",
        "status": "succeeded",
        "echo": f"auth {API_KEY}",
        "tok": SLASHED_TOKEN,
        API_KEY: ["nested", {"again": SLASHED_TOKEN.replace("/", "\\/")}],
    }
    api.post(CHARGE).mock(return_value=reply(200, echo))
    result = await twin.charge(SLASHED_TOKEN, amount_tokens=10, model="gpt-4")
    for shown in (str(result), repr(result), f"Charge successful: {result}"):
        assert API_KEY not in shown
        assert SLASHED_TOKEN not in shown
        assert "<redacted>" in shown
    assert result["tok"] == SLASHED_TOKEN  # the dict view is still exactly the JSON sent
    assert result.charge_id == "ch_1"
