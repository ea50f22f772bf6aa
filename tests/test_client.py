"""The clients as users drive them: the 0.1.0 README, configuration, lifecycle, waiting, secrets."""

from __future__ import annotations

import asyncio
import logging
import traceback

import httpx
import pytest
import respx

from knai import (
    AsyncKNAIProvider,
    InvalidAPIKeyError,
    KNAIError,
    KNAIProvider,
    ServerError,
    SessionExpiredError,
    SessionWaitTimeoutError,
)
from tests.conftest import API_KEY, SLUG, TOKEN, FakeTime
from tests.support.twin import (
    ACTIVE,
    CHARGE,
    CHARGED,
    PENDING,
    STATUS,
    Twin,
    Twins,
    charge,
    reply,
)

pytestmark = pytest.mark.anyio


# -- configuration and lifecycle ----------------------------------------------------------------


async def test_configuration_comes_from_the_environment(
    twins: Twins, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KNAI_API_KEY", "sk_env_7d1e")
    monkeypatch.setenv("KNAI_PROVIDER_SLUG", "env-slug")
    monkeypatch.setenv("KNAI_BASE_URL", "https://sandbox.conx.ai/api/")
    route = api.get(f"https://sandbox.conx.ai/api{STATUS}").mock(return_value=reply(body=ACTIVE))
    await twins.make(provider_api_key=None, provider_slug=None).get_session("user123")
    assert route.calls.last.request.headers["X-Provider-API-Key"] == "sk_env_7d1e"
    assert route.calls.last.request.headers["X-Provider-Slug"] == "env-slug"


async def test_arguments_take_precedence_over_the_environment(
    twins: Twins, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KNAI_API_KEY", "sk_env_7d1e")
    monkeypatch.setenv("KNAI_PROVIDER_SLUG", "env-slug")
    monkeypatch.setenv("KNAI_BASE_URL", "https://sandbox.conx.ai")
    route = api.get(STATUS).mock(return_value=reply(body=ACTIVE))
    twin = twins.make(provider_api_key=API_KEY, provider_slug=SLUG, base_url="https://api.conx.ai")
    await twin.get_session("user123")
    assert route.calls.last.request.headers["X-Provider-API-Key"] == API_KEY
    assert route.calls.last.request.headers["X-Provider-Slug"] == SLUG


@pytest.mark.parametrize("missing", ["KNAI_API_KEY", "KNAI_PROVIDER_SLUG"])
async def test_missing_credentials_name_the_variable(
    twins: Twins, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setenv("KNAI_API_KEY", "sk_env_7d1e")
    monkeypatch.setenv("KNAI_PROVIDER_SLUG", "env-slug")
    monkeypatch.delenv(missing)
    with pytest.raises(ValueError, match=missing):
        twins.make(provider_api_key=None, provider_slug=None)


def test_with_block_closes_the_pool(api: respx.MockRouter) -> None:
    from knai import KNAIProvider

    api.get(STATUS).mock(return_value=reply(body=ACTIVE))
    with KNAIProvider(provider_api_key=API_KEY, provider_slug=SLUG) as provider:
        provider.get_session("user123")
    with pytest.raises(RuntimeError, match="closed"):
        provider.get_session("user123")
    assert api.calls.call_count == 1  # nothing was sent once it was closed


async def test_async_with_block_closes_the_pool(api: respx.MockRouter) -> None:
    api.get(STATUS).mock(return_value=reply(body=ACTIVE))
    async with AsyncKNAIProvider(provider_api_key=API_KEY, provider_slug=SLUG) as provider:
        await provider.get_session("user123")
    with pytest.raises(RuntimeError, match="closed"):
        await provider.get_session("user123")
    assert api.calls.call_count == 1


async def test_close_is_idempotent(twin: Twin, api: respx.MockRouter) -> None:
    api.get(STATUS).mock(return_value=reply(body=ACTIVE))
    await twin.close()
    await twin.close()
    with pytest.raises(RuntimeError, match="closed"):
        await twin.get_session("user123")


async def test_with_options_shares_the_pool_and_closing_the_copy_leaves_it_open(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.get(STATUS).mock(return_value=reply(body=ACTIVE))
    copy = twin.with_options(timeout=1.0, max_retries=0)
    await copy.get_session("user123")
    await copy.close()
    assert (await twin.get_session("user123")).is_active
    assert (await copy.get_session("user123")).is_active  # closing the copy closed nothing
    await twin.close()
    with pytest.raises(RuntimeError, match="closed"):
        await copy.get_session("user123")  # the copy's pool was the original's


async def test_repr_names_the_slug_but_never_the_api_key(twin: Twin) -> None:
    copy = twin.with_options(max_retries=1).provider
    for text in (repr(twin.provider), str(twin.provider), repr(copy)):
        assert API_KEY not in text
        assert SLUG in text


# -- wait_for_session ---------------------------------------------------------------------------


async def test_wait_returns_the_active_session_after_pending_polls(
    twin: Twin, api: respx.MockRouter
) -> None:
    route = api.get(STATUS).mock(side_effect=[reply(body=PENDING)] * 2 + [reply(body=ACTIVE)])
    session = await twin.wait_for_session("user123", poll_interval=0.01)
    assert session.is_active
    assert session["session_token"] == TOKEN
    assert route.call_count == 3


async def test_wait_pauses_poll_interval_between_polls(
    twins: Twins, api: respx.MockRouter, fake_time: FakeTime
) -> None:
    api.get(STATUS).mock(side_effect=[reply(body=PENDING)] * 3 + [reply(body=ACTIVE)])
    twin = twins.make(retry=fake_time.policy())
    await twin.wait_for_session("user123", poll_interval=0.05)
    # The fake clock stands still during a poll: each pause is the whole interval.
    assert fake_time.sleeps == [0.05] * 3


async def test_wait_timeout_raises_at_the_deadline_not_a_poll_interval_later(
    twins: Twins, api: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = api.get(STATUS).mock(return_value=reply(body=PENDING))
    twin = twins.make(retry=fake_time.policy())
    started = fake_time.now
    with pytest.raises(SessionWaitTimeoutError) as info:
        await twin.wait_for_session("user123", poll_interval=10, timeout=0.2)
    assert fake_time.sleeps == [pytest.approx(0.2)], "the pause is cut at the deadline"
    assert fake_time.now - started == pytest.approx(0.2)
    assert isinstance(info.value, TimeoutError)
    assert "'pending'" in str(info.value)
    assert route.call_count == 1


async def test_wait_timeout_keeps_polling_until_the_deadline(
    twins: Twins, api: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = api.get(STATUS).mock(return_value=reply(body=PENDING))
    twin = twins.make(retry=fake_time.policy())
    with pytest.raises(SessionWaitTimeoutError):
        await twin.wait_for_session("user123", poll_interval=0.25, timeout=1.5)
    assert route.call_count == 6  # polls at 0, 0.25, ... 1.25; the deadline at 1.5
    assert fake_time.sleeps == [0.25] * 6


async def test_wait_with_timeout_caps_each_requests_timeout_at_the_time_left(
    twins: Twins, api: respx.MockRouter, fake_time: FakeTime
) -> None:
    seen: list[dict[str, float]] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return reply(body=ACTIVE if len(seen) == 2 else PENDING)

    api.get(STATUS).mock(side_effect=record)
    twin = twins.make(retry=fake_time.policy())
    await twin.wait_for_session("user123", poll_interval=0.1, timeout=0.5)
    assert len(seen) == 2
    assert all(value == pytest.approx(0.5) for value in seen[0].values())
    assert all(value == pytest.approx(0.4) for value in seen[1].values()), "0.1 s later"


@pytest.mark.parametrize("timeout", [None, 5.0])
async def test_wait_rides_out_a_flapping_status_endpoint(
    twin: Twin, api: respx.MockRouter, timeout: float | None
) -> None:
    down = reply(503, {"error": "unavailable"})
    route = api.get(STATUS).mock(
        side_effect=[down, reply(body=PENDING), down, httpx.ConnectError, reply(body=ACTIVE)]
    )
    session = await twin.wait_for_session("user123", poll_interval=0.01, timeout=timeout)
    assert session.is_active
    assert route.call_count == 5


async def test_wait_with_timeout_rides_out_persistent_503s_until_the_deadline(
    twins: Twins, api: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = api.get(STATUS).mock(return_value=reply(503, {"error": "unavailable"}))
    twin = twins.make(retry=fake_time.policy())
    started = fake_time.now
    with pytest.raises(SessionWaitTimeoutError):
        await twin.wait_for_session("user123", poll_interval=0.01, timeout=0.3)
    assert fake_time.now - started == pytest.approx(0.3), "it waited to the deadline, no further"
    assert route.call_count > 3, "more polls than one call's retry budget"


async def test_wait_timeout_after_persistent_503s_is_caused_by_the_server_error(
    twins: Twins, api: respx.MockRouter, fake_time: FakeTime
) -> None:
    api.get(STATUS).mock(return_value=reply(503, {"error": "unavailable"}))
    twin = twins.make(retry=fake_time.policy())
    with pytest.raises(SessionWaitTimeoutError) as info:
        await twin.wait_for_session("user123", poll_interval=0.02, timeout=0.2)
    assert isinstance(info.value.__cause__, ServerError)


async def test_wait_without_timeout_raises_a_persistent_503_once_retries_are_spent(
    twin: Twin, api: respx.MockRouter, sleeps: list[float]
) -> None:
    route = api.get(STATUS).mock(return_value=reply(503, {"error": "unavailable"}))
    with pytest.raises(ServerError) as info:
        await twin.wait_for_session("user123", poll_interval=0.01)
    assert info.value.attempts == route.call_count == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("timeout", [None, 30.0])
async def test_wait_raises_a_refused_api_key_at_once(
    twins: Twins, api: respx.MockRouter, fake_time: FakeTime, timeout: float | None
) -> None:
    route = api.get(STATUS).mock(return_value=reply(401, {"error": "bad key"}))
    twin = twins.make(retry=fake_time.policy())
    with pytest.raises(InvalidAPIKeyError):
        await twin.wait_for_session("user123", poll_interval=0.01, timeout=timeout)
    assert route.call_count == 1
    assert fake_time.sleeps == [], "no pause: a refused key is not waited out"


async def test_async_wait_is_cancelled_mid_sleep(api: respx.MockRouter) -> None:
    route = api.get(STATUS).mock(return_value=reply(body=PENDING))
    aclient = AsyncKNAIProvider(API_KEY, SLUG)  # the default policy: real asyncio.sleep
    task = asyncio.create_task(aclient.wait_for_session("user123", poll_interval=60))
    for _ in range(200):
        if route.called:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)  # now in its 60 s pause
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    assert done == {task}, "the wait did not stop within 1 s of being cancelled"
    assert task.cancelled()
    assert route.call_count == 1
    await aclient.aclose()


async def test_async_wait_is_cancelled_mid_request(
    aclient: AsyncKNAIProvider, api: respx.MockRouter
) -> None:
    entered, finished = asyncio.Event(), []

    async def hang(request: httpx.Request) -> httpx.Response:
        entered.set()
        try:
            await asyncio.sleep(3600)
        finally:
            finished.append(request)
        return reply(body=ACTIVE)  # pragma: no cover

    route = api.get(STATUS).mock(side_effect=hang)
    task = asyncio.create_task(aclient.wait_for_session("user123", timeout=600))
    await asyncio.wait_for(entered.wait(), 1.0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    assert done == {task}, "the wait did not stop within 1 s of being cancelled"
    assert task.cancelled()
    assert len(finished) == 1, "the in-flight request was abandoned, not left running"
    route.mock(side_effect=None, return_value=reply(body=ACTIVE))
    assert (await aclient.get_session("user123")).is_active


# -- secrets ------------------------------------------------------------------------------------


async def test_secrets_never_reach_logs_reprs_errors_or_output(
    twin: Twin,
    api: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("knai", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    # A status poll knows only the API key; a charge knows the session token too.
    echo_key = {"error": f"bad key {API_KEY}"}
    echo = {"error": f"bad token {TOKEN} for key {API_KEY}"}
    timeout = httpx.ReadTimeout
    api.get(STATUS).mock(
        side_effect=[
            reply(503, echo_key),
            reply(body=ACTIVE),
            *[timeout] * 3,
            reply(401, echo_key),
        ]
    )
    api.post(CHARGE).mock(
        side_effect=[
            reply(502, echo),
            reply(body={**CHARGED, "session_token": TOKEN}),
            reply(403, echo),
            *[httpx.ConnectError] * 3,
            reply(200, b"<html>" + TOKEN.encode() + API_KEY.encode()),
        ]
    )
    session = await twin.wait_for_session("user123", poll_interval=0.01)
    result = await twin.charge(session["session_token"], amount_tokens=1500, model="gpt-4")
    errors: list[KNAIError] = []
    for call in (
        lambda: twin.get_session("user123"),
        lambda: twin.get_session("user123"),
        *[lambda: twin.charge(TOKEN, amount_tokens=1, model="gpt-4")] * 3,
    ):
        with pytest.raises(KNAIError) as info:
            await call()
        errors.append(info.value)
    out, err = capsys.readouterr()
    texts = [out, err, caplog.text, *(record.getMessage() for record in caplog.records)]
    texts += [repr(twin.provider), str(twin.provider)]
    for shown in (session, result, *errors):
        texts += [str(shown), repr(shown)]
    texts += ["".join(traceback.format_exception(error)) for error in errors]
    for text in texts:
        assert API_KEY not in text
        assert TOKEN not in text
    # The scenarios really ran: retries were logged, and every kind of failure was raised.
    assert any("retrying" in record.getMessage() for record in caplog.records)
    assert any(record.name == "httpx" for record in caplog.records)
    assert [type(error).__name__ for error in errors] == [
        "APITimeoutError",
        "InvalidAPIKeyError",
        "SessionExpiredError",
        "APIConnectionError",
        "ResponseValidationError",
    ]


async def test_a_token_echoed_in_an_error_body_is_redacted(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.post(CHARGE).mock(return_value=reply(403, {"error": f"bad token {TOKEN}"}))
    with pytest.raises(SessionExpiredError) as info:
        await charge(twin)
    assert info.value.message == "bad token <redacted>"
    assert str(info.value) == "bad token <redacted> (HTTP 403)"


async def test_an_api_key_echoed_to_a_status_poll_is_redacted(
    twin: Twin, api: respx.MockRouter
) -> None:
    api.get(STATUS).mock(return_value=reply(401, {"message": f"unknown key {API_KEY}"}))
    with pytest.raises(InvalidAPIKeyError) as info:
        await twin.get_session("user123")
    assert str(info.value) == "unknown key <redacted> (HTTP 401)"


async def test_a_secret_is_redacted_before_a_long_message_is_cut(
    twin: Twin, api: respx.MockRouter
) -> None:
    """Cutting first would leave most of a token straddling the cut in the message."""
    api.post(CHARGE).mock(return_value=reply(400, {"error": "x" * 285 + TOKEN + "y" * 50}))
    with pytest.raises(KNAIError) as info:
        await charge(twin)
    assert TOKEN[:12] not in str(info.value)
    assert "<redac" in str(info.value)


# -- an unclosed client (issue 9, item 10) ------------------------------------------------------

README_010 = """
import sys
from knai import KNAIProvider

provider = KNAIProvider(provider_api_key="sk_test", provider_slug="acme", base_url=sys.argv[1])
session = provider.get_session("user123")
result = provider.charge("tok_1", amount_tokens=1500, model="gpt-4")
print(f"Charge successful: {result}")
"""


def test_the_010_readme_example_never_closing_its_provider_runs_warning_free() -> None:
    """Under -W error -X dev, a provider left open closes its pool when collected."""
    import subprocess
    import sys

    from tests.support.rogue import Reply, RogueServer

    body = {"status": "active", "session_token": "tok_1", "charge_id": "ch_1"}
    with RogueServer(Reply(200, body)) as server:
        done = subprocess.run(
            [sys.executable, "-X", "dev", "-W", "error", "-c", README_010, server.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert "Charge successful" in done.stdout
    assert "ResourceWarning" not in done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_a_collected_sync_client_closes_its_connections() -> None:
    import gc

    from tests.support.rogue import Reply, RogueServer

    with RogueServer(Reply(200, ACTIVE)) as server:
        provider = KNAIProvider(API_KEY, SLUG, server.url)
        provider.get_session("user123")
        copy = provider.with_options(timeout=1.0)
        del provider
        gc.collect()
        assert copy.get_session("user123").is_active  # a copy keeps the shared pool alive
        del copy
        gc.collect()
        assert server.wait_until(lambda: server.open_connections == 0)


# -- the twins' docstrings (issue 11) -----------------------------------------------------------


def _sections(doc: str) -> dict[str, str]:
    """A Google-style docstring by section: "" (the summary), "Args", "Returns", "Raises"..."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in doc.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
            sections[current] = []
        else:
            sections[current].append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def _args(doc: str) -> dict[str, str]:
    """The Args section as {name: its description, lines joined}."""
    found: dict[str, str] = {}
    name, inside = "", False
    for line in doc.splitlines():
        if not line.startswith(" "):
            inside = line == "Args:"
        elif inside and not line.startswith("     "):
            name, _, rest = line.strip().partition(": ")
            found[name] = rest
        elif inside:
            found[name] += " " + line.strip()
    return found


@pytest.mark.parametrize("name", ["get_session", "wait_for_session", "charge", "with_options"])
def test_the_twins_methods_have_one_signature_and_one_docstring(name: str) -> None:
    import inspect

    sync_method, async_method = getattr(KNAIProvider, name), getattr(AsyncKNAIProvider, name)
    assert inspect.signature(sync_method) == inspect.signature(async_method)
    ours, theirs = (
        _sections(inspect.getdoc(sync_method) or ""),
        _sections(inspect.getdoc(async_method) or ""),
    )
    # The async wait may add what cancelling it does; every section is otherwise the same.
    theirs[""] = theirs[""].replace(
        "\nCancelling the awaiting task stops the wait at once, mid-sleep or\nmid-request,"
        " and leaves no request behind.",
        "",
    )
    assert ours == theirs


def test_the_sync_client_documents_every_argument_and_the_async_one_what_differs() -> None:
    import inspect

    ours = _args(inspect.getdoc(KNAIProvider) or "")
    theirs = _args(inspect.getdoc(AsyncKNAIProvider) or "")
    assert ours.keys() == set(inspect.signature(KNAIProvider).parameters)
    assert inspect.signature(KNAIProvider).parameters.keys() == (
        inspect.signature(AsyncKNAIProvider).parameters.keys()
    )
    assert theirs.keys() == {"(all others)", "http_client", "max_connections"}
    assert "AsyncClient" in theirs["http_client"]
    assert (
        _sections(inspect.getdoc(KNAIProvider) or "")["Raises"]
        == _sections(inspect.getdoc(AsyncKNAIProvider) or "")["Raises"]
    )
