"""Bad arguments raise ValueError naming the argument, before anything is sent, secrets unechoed."""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
import respx

from knai import AsyncKNAIProvider, KNAIProvider
from tests.conftest import API_KEY, BASE_URL, SLUG, TOKEN

CLIENTS = [KNAIProvider, AsyncKNAIProvider]
SECRET = "zq7SecretValue"
# Characters that may not appear in a header value sent as a secret.
BAD_CHARS = [" ", "\t", "\r\n", "\n", "\r", "\x00", "é", "\u2122"]
BAD_SECRETS = [f"{SECRET}{c}tail" for c in BAD_CHARS]
ENV_VARS = ("KNAI_API_KEY", "KNAI_PROVIDER_SLUG", "KNAI_BASE_URL")
PENDING = {"status": "pending"}


@pytest.fixture(autouse=True)
def _no_knai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sent(api: respx.MockRouter) -> respx.MockRouter:
    """Every request is answered (so a missing check would show as a call, not a crash)."""
    api.route().respond(200, json={"status": "active", "session_token": TOKEN})
    return api


@pytest.fixture(params=["sync", "async"])
def provider(request: pytest.FixtureRequest) -> Any:
    """The sync `client` or the async `aclient`, both bound to the respx router."""
    return request.getfixturevalue("client" if request.param == "sync" else "aclient")


async def _call(provider: Any, method: str, *args: Any, **kwargs: Any) -> None:
    result = getattr(provider, method)(*args, **kwargs)
    if inspect.isawaitable(result):
        await result


def _make(cls: type[Any], **kwargs: Any) -> Any:
    kwargs = {"provider_api_key": API_KEY, "provider_slug": SLUG, **kwargs}
    return cls(**kwargs)


# -- the constructor ----------------------------------------------------------

ENV_OF = {"provider_api_key": "KNAI_API_KEY", "provider_slug": "KNAI_PROVIDER_SLUG"}


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize("arg", list(ENV_OF))
@pytest.mark.parametrize("value", [None, ""])
def test_missing_key_or_slug_names_argument_and_env_var(
    cls: type[Any], arg: str, value: str | None
) -> None:
    with pytest.raises(ValueError, match=arg) as info:
        _make(cls, **{arg: value})
    assert ENV_OF[arg] in str(info.value)


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize("arg", list(ENV_OF))
def test_empty_key_or_slug_is_refused(cls: type[Any], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        _make(cls, **{arg: ""})


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize("arg", list(ENV_OF))
@pytest.mark.parametrize("value", BAD_SECRETS)
def test_malformed_key_or_slug_is_refused_without_echo(
    cls: type[Any], arg: str, value: str
) -> None:
    with pytest.raises(ValueError, match=arg) as info:
        _make(cls, **{arg: value})
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, True, "5"])
def test_bad_client_timeout_is_refused(cls: type[Any], value: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        _make(cls, timeout=value)


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize("value", [-1, True, 1.5, "2"])
def test_bad_client_max_retries_is_refused(cls: type[Any], value: Any) -> None:
    with pytest.raises(ValueError, match="max_retries"):
        _make(cls, max_retries=value)


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize("value", [0, -1, 1001, True, 1.5, "8"])
def test_bad_client_max_connections_is_refused(cls: type[Any], value: Any) -> None:
    with pytest.raises(ValueError, match="max_connections"):
        _make(cls, max_connections=value)


@pytest.mark.parametrize(
    ("cls", "own"), [(KNAIProvider, httpx.Client), (AsyncKNAIProvider, httpx.AsyncClient)]
)
def test_max_connections_with_your_own_client_is_refused(cls: type[Any], own: type[Any]) -> None:
    client = own()
    with pytest.raises(ValueError, match="max_connections sizes the SDK's own pool"):
        _make(cls, http_client=client, max_connections=8)


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://api.conx.ai",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "ftp://x",
        "api.conx.ai",
        "https://",
        "",
        "https://api.conx.ai/?key=1",
        "https://user:pw@api.conx.ai",
    ],
)
def test_bad_base_url_is_refused(cls: type[Any], url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        _make(cls, base_url=url)


# URLs httpx will not take, or would misroute: each refused at construction.
UNSENDABLE_URLS = [
    "https://api.conx.ai:abc",
    "https://api.conx.ai:99999",
    "https://api.conx.ai:0",
    "https://api.conx.ai:-1",
    "https://api.conx.ai/?",
    "https://api.conx.ai/#",
    "https://api.conx.ai?",
    "https://api.conx.ai/v1#frag",
    "https://api.conx.ai/pa th",
    "https://api.co\tnx.ai",
    "https://api.conx.ai/\x00",
    "https://api.conx.ai/\u00e9",
    "https://[::1",
    "https://exa mple.com",
]


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize("url", UNSENDABLE_URLS)
def test_base_url_httpx_cannot_send_to_is_a_value_error_at_construction(
    cls: type[Any], url: str
) -> None:
    with pytest.raises(ValueError, match="base_url") as info:
        _make(cls, base_url=url)
    assert not isinstance(info.value, httpx.InvalidURL)


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize("url", UNSENDABLE_URLS[:6])
def test_bad_base_url_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, cls: type[Any], url: str
) -> None:
    monkeypatch.setenv("KNAI_BASE_URL", url)
    with pytest.raises(ValueError, match="KNAI_BASE_URL"):
        _make(cls)


@pytest.mark.parametrize("padding", ["\n", "\r\n", "\t", " ", "\n\n"])
@pytest.mark.parametrize("source", ["argument", "environment"])
def test_whitespace_around_base_url_is_stripped_and_requests_route_right(
    monkeypatch: pytest.MonkeyPatch, padding: str, source: str
) -> None:
    """Env files often end lines with CR or a tab: the URL is still the URL."""
    padded = f"{padding}http://127.0.0.1:8080/{padding}"
    options: dict[str, Any] = {"base_url": padded}
    if source == "environment":
        monkeypatch.setenv("KNAI_BASE_URL", padded)
        options = {}
    with respx.mock(base_url="http://127.0.0.1:8080") as router:
        route = router.get("/providers/session/status").respond(200, json=PENDING)
        with _make(KNAIProvider, **options) as provider:
            assert provider.base_url == "http://127.0.0.1:8080"
            provider.get_session("user123")
    assert route.calls.last.request.url.path == "/providers/session/status"
    assert route.calls.last.request.url.query == b"provider_username=user123"


@pytest.mark.parametrize("name", ["KNAI_API_KEY", "KNAI_PROVIDER_SLUG"])
def test_secrets_from_env_files_lose_their_line_ending(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("KNAI_API_KEY", API_KEY)
    monkeypatch.setenv("KNAI_PROVIDER_SLUG", SLUG)
    monkeypatch.setenv(name, f"{API_KEY if name == 'KNAI_API_KEY' else SLUG}\r\n")
    with respx.mock(base_url=BASE_URL) as router:
        route = router.get("/providers/session/status").respond(200, json=PENDING)
        with KNAIProvider() as provider:
            provider.get_session("user123")
    headers = route.calls.last.request.headers
    assert (headers["X-Provider-API-Key"], headers["X-Provider-Slug"]) == (API_KEY, SLUG)


@pytest.mark.parametrize("name", ["KNAI_API_KEY", "KNAI_PROVIDER_SLUG"])
@pytest.mark.parametrize("value", [f"{SECRET} tail", f"{SECRET}\x01", f"{SECRET}\u00e9"])
def test_bad_secret_from_the_environment_names_the_variable_without_echo(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("KNAI_API_KEY", API_KEY)
    monkeypatch.setenv("KNAI_PROVIDER_SLUG", SLUG)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name) as info:
        KNAIProvider()
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("url", ["https://api.conx.ai:99999", "https://api.conx.ai/?"])
def test_cli_reports_a_bad_base_url_without_a_traceback(url: str) -> None:
    env = {**os.environ, "KNAI_API_KEY": API_KEY, "KNAI_PROVIDER_SLUG": SLUG, "KNAI_BASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "knai", "session", "user123"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "KNAI_BASE_URL" in done.stdout + done.stderr


@pytest.mark.parametrize("url", [f"http://user:{SECRET}@example.com", f"ftp://u:{SECRET}@x"])
def test_refused_base_url_never_echoes_credentials(url: str) -> None:
    with pytest.raises(ValueError, match="base_url") as info:
        _make(KNAIProvider, base_url=url)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://[::1]:1", "http://[::1]:1"),
        ("https://api.conx.ai/", "https://api.conx.ai"),
        ("https://wallet.example.com/v2/", "https://wallet.example.com/v2"),
    ],
)
def test_https_or_loopback_base_url_is_accepted_without_trailing_slash(
    cls: type[Any], url: str, kept: str
) -> None:
    assert _make(cls, base_url=url).base_url == kept


def test_trailing_slash_is_not_doubled_in_the_request_path() -> None:
    with respx.mock(base_url="http://127.0.0.1:8080") as router:
        route = router.get("/providers/session/status").respond(200, json=PENDING)
        with _make(KNAIProvider, base_url="http://127.0.0.1:8080/") as provider:
            provider.get_session("user123")
    assert route.calls.last.request.url.path == "/providers/session/status"


@pytest.mark.parametrize("cls", CLIENTS)
def test_key_slug_and_base_url_fall_back_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, cls: type[Any]
) -> None:
    monkeypatch.setenv("KNAI_API_KEY", API_KEY)
    monkeypatch.setenv("KNAI_PROVIDER_SLUG", SLUG)
    monkeypatch.setenv("KNAI_BASE_URL", "https://wallet.example.com/")
    provider = cls()
    assert provider.base_url == "https://wallet.example.com"
    assert provider.provider_slug == SLUG
    assert _make(cls, base_url=BASE_URL).base_url == BASE_URL


@pytest.mark.parametrize("explicit", [False, True], ids=["from-env", "explicit-wins"])
def test_key_and_slug_sent_come_from_env_unless_passed(
    monkeypatch: pytest.MonkeyPatch, explicit: bool
) -> None:
    monkeypatch.setenv("KNAI_API_KEY", "sk_from_env_0" if explicit else API_KEY)
    monkeypatch.setenv("KNAI_PROVIDER_SLUG", "slug-from-env" if explicit else SLUG)
    with respx.mock(base_url=BASE_URL) as router:
        route = router.get("/providers/session/status").respond(200, json=PENDING)
        with _make(KNAIProvider) if explicit else KNAIProvider() as provider:
            provider.get_session("user123")
    headers = route.calls.last.request.headers
    assert (headers["X-Provider-API-Key"], headers["X-Provider-Slug"]) == (API_KEY, SLUG)


RESERVED_HEADERS = ["X-Provider-API-Key", "X-Provider-Slug", "X-Session-Token", "Idempotency-Key"]
RESERVED_HEADERS += ["Content-Type", "Content-Length", "Host"]


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize(
    "name",
    [*RESERVED_HEADERS, "x-provider-api-key", "CONTENT-TYPE"],
)
def test_default_headers_cannot_override_protocol_headers(cls: type[Any], name: str) -> None:
    with pytest.raises(ValueError, match="default_headers"):
        _make(cls, default_headers={name: "evil"})


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize("headers", [{"X-Trace": "a\r\nX-Evil: 1"}, {"X-Trace": "a\x00"}, {"X": 5}])
def test_default_headers_with_bad_values_are_refused(cls: type[Any], headers: Any) -> None:
    with pytest.raises(ValueError, match="default_headers"):
        _make(cls, default_headers=headers)


@pytest.mark.parametrize("headers", [{"X-Trace": "café"}, {"X-Tråce": "1"}, {"X Bad": "1"}])
def test_default_headers_not_sendable_are_refused_at_construction(headers: Any) -> None:
    with pytest.raises(ValueError, match="default_headers"):
        _make(KNAIProvider, default_headers=headers)


def test_default_headers_are_sent_beside_the_protocol_headers(api: respx.MockRouter) -> None:
    route = api.get("/providers/session/status").respond(200, json=PENDING)
    with _make(KNAIProvider, default_headers={"X-Trace": "t-1"}) as provider:
        provider.get_session("user123")
    headers = route.calls.last.request.headers
    assert headers["X-Trace"] == "t-1"
    assert headers["X-Provider-API-Key"] == API_KEY
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("cls", "make_http"),
    [
        (KNAIProvider, httpx.AsyncClient),
        (AsyncKNAIProvider, httpx.Client),
        (KNAIProvider, lambda: "not a client"),
        (AsyncKNAIProvider, object),
    ],
)
def test_wrong_http_client_type_is_type_error(cls: type[Any], make_http: Any) -> None:
    http_client = make_http()
    with pytest.raises(TypeError, match="http_client"):
        _make(cls, http_client=http_client)
    if isinstance(http_client, httpx.Client):
        http_client.close()


# -- each call, sync and async: refused before anything is sent ---------------

BAD_AMOUNTS = [0, -1, True, False, 1.0, "5", None, 2**63]


@pytest.mark.anyio
@pytest.mark.parametrize("amount", BAD_AMOUNTS)
async def test_bad_amount_is_refused_before_sending(
    provider: Any, sent: respx.MockRouter, amount: Any
) -> None:
    with pytest.raises(ValueError, match="amount_tokens"):
        await _call(provider, "charge", TOKEN, amount, "gpt-4")
    assert sent.calls.call_count == 0


@pytest.mark.anyio
async def test_largest_amount_is_sent(provider: Any, sent: respx.MockRouter) -> None:
    await _call(provider, "charge", TOKEN, 2**63 - 1, "gpt-4")
    assert b'"amount_tokens":9223372036854775807' in sent.calls.last.request.content


@pytest.mark.anyio
@pytest.mark.parametrize(
    "model",
    ["gpt 4", "gpt-4\n", " gpt-4", "gpt-4\t", "gpt\u00a04", "gpt\u20284", "gpt\x00", "gpt\x7f"],
)
async def test_model_with_whitespace_or_control_characters_is_refused_before_sending(
    provider: Any, sent: respx.MockRouter, model: str
) -> None:
    """As the README says: a model name holding whitespace is refused, not charged."""
    with pytest.raises(ValueError, match="model"):
        await _call(provider, "charge", TOKEN, 1500, model)
    assert sent.calls.call_count == 0


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["gpt-4", "claude-3.5-sonnet@2024", "modèle/v1", "a:b_c"])
async def test_model_names_without_whitespace_are_sent_as_given(
    provider: Any, sent: respx.MockRouter, model: str
) -> None:
    await _call(provider, "charge", TOKEN, 1500, model)
    assert json.loads(sent.calls.last.request.content)["model"] == model


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["", "   ", "\t\n", None])
async def test_blank_model_is_refused_before_sending(
    provider: Any, sent: respx.MockRouter, model: Any
) -> None:
    with pytest.raises(ValueError, match="model"):
        await _call(provider, "charge", TOKEN, 1500, model)
    assert sent.calls.call_count == 0


@pytest.mark.anyio
@pytest.mark.parametrize("token", [None, "", *BAD_SECRETS])
async def test_bad_session_token_is_refused_without_echo(
    provider: Any, sent: respx.MockRouter, token: Any
) -> None:
    with pytest.raises(ValueError, match="session_token") as info:
        await _call(provider, "charge", token, 1500, "gpt-4")
    assert SECRET not in str(info.value)
    assert sent.calls.call_count == 0


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["", *BAD_SECRETS, "k" * 256])
async def test_bad_idempotency_key_is_refused_without_echo(
    provider: Any, sent: respx.MockRouter, key: str
) -> None:
    with pytest.raises(ValueError, match="idempotency_key") as info:
        await _call(provider, "charge", TOKEN, 1500, "gpt-4", idempotency_key=key)
    assert SECRET not in str(info.value)
    assert sent.calls.call_count == 0


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["get_session", "wait_for_session"])
@pytest.mark.parametrize("username", ["", None, "user\x00123"])
async def test_bad_provider_username_is_refused_before_sending(
    provider: Any, sent: respx.MockRouter, method: str, username: Any
) -> None:
    with pytest.raises(ValueError, match="provider_username"):
        await _call(provider, method, username)
    assert sent.calls.call_count == 0


@pytest.mark.anyio
@pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf, True, "1"])
async def test_bad_poll_interval_is_refused_before_sending(
    provider: Any, sent: respx.MockRouter, interval: Any
) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        await _call(provider, "wait_for_session", "user123", poll_interval=interval)
    assert sent.calls.call_count == 0


@pytest.mark.anyio
@pytest.mark.parametrize("timeout", [0, -1, math.nan, -math.inf])
async def test_bad_wait_timeout_is_refused_before_sending(
    provider: Any, sent: respx.MockRouter, timeout: Any
) -> None:
    with pytest.raises(ValueError, match="timeout"):
        await _call(provider, "wait_for_session", "user123", timeout=timeout)
    assert sent.calls.call_count == 0


CALLS = [("get_session", ("user123",)), ("charge", (TOKEN, 1500, "gpt-4"))]
BAD_OPTIONS: dict[str, list[Any]] = {"timeout": [0, -1, math.nan], "max_retries": [-1, True, 1.5]}


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "args"), CALLS)
@pytest.mark.parametrize(
    ("option", "value"),
    [(option, v) for option, vs in BAD_OPTIONS.items() for v in vs],
)
async def test_bad_per_call_option_is_refused_before_sending(
    provider: Any,
    sent: respx.MockRouter,
    method: str,
    args: tuple[Any, ...],
    option: str,
    value: Any,
) -> None:
    with pytest.raises(ValueError, match=option):
        await _call(provider, method, *args, **{option: value})
    assert sent.calls.call_count == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [("timeout", 0), ("timeout", -1), ("max_retries", -1), ("max_retries", 1.5)],
)
def test_bad_with_options_is_refused(client: KNAIProvider, option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        client.with_options(**{option: value})
