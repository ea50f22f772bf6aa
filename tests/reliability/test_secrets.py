"""Secrets never leak, and the key goes nowhere but the configured base URL.

With DEBUG logging on for knai, httpx, httpcore, uvicorn and the root logger, a
compact fault matrix runs against the sandbox wallet and a misbehaving server,
both of which echo the secrets back in error and success bodies; then every
log record, everything written to stdout/stderr (fd level), and the str, repr
and traceback of every exception, result and client is scanned for the API key
and the session tokens. Redirects are not followed (a second server, the
redirect's target, sees nothing); plain http goes only to loopback; TLS
verification is on and cannot be turned off but by passing one's own client.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knai import (
    APIConnectionError,
    APITimeoutError,
    AsyncKNAIProvider,
    KNAIError,
    KNAIProvider,
)
from knai._args import check_base_url
from knai.testing import RunningSandbox, SandboxAdmin
from tests.conftest import API_KEY, SLUG
from tests.reliability.conftest import Clients
from tests.support.rogue import Reply, Request, Reset, RogueServer, Stall
from tests.support.twin import CHARGED, STATUS

pytestmark = pytest.mark.anyio

LOGGERS = ["", "knai", "knai.testing", "httpx", "httpcore", "uvicorn", "uvicorn.error", "hpack"]
KEY = "sk_live_" + secrets.token_hex(16)  # this provider's key: a secret like any real one
PROVIDER = "leaky-ai"
USER = "leaky-user"


class Secrets:
    """The API key and every session token in play, and what was shown to the user."""

    def __init__(self, *values: str) -> None:
        self.values = list(values)
        self.shown: list[object] = []
        self.errors: list[KNAIError] = []

    async def run(self, call: Awaitable[Any]) -> Any:
        """Await `call`, keeping its result or its KNAIError to be scanned later."""
        try:
            result = await call
        except KNAIError as exc:
            self.errors.append(exc)
            self.shown.append(exc)
            return exc
        self.shown += [result, getattr(result, "meta", None)]
        return result

    def texts(self) -> Iterator[str]:
        for thing in self.shown:
            yield str(thing)
            yield repr(thing)
        for error in self.errors:
            yield "".join(traceback.format_exception(error))
            yield error.message

    def assert_absent(self, texts: Iterator[str] | list[str], where: str) -> None:
        for text in texts:
            for secret in self.values:
                assert secret not in text, f"a secret leaked into {where}: {_around(text, secret)}"


def _around(text: str, secret: str) -> str:
    at = text.index(secret)
    return "..." + text[max(0, at - 80) : at] + "<SECRET>..."


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    return caplog


@pytest.fixture
def wallet(knai_sandbox_server: RunningSandbox) -> SandboxAdmin:
    admin = knai_sandbox_server.admin
    admin.create_provider(PROVIDER, KEY)
    admin.create_user(PROVIDER, USER, balance=10_000)
    return admin


def echo(*values: str) -> dict[str, str]:
    """An error body that repeats the secrets back, as a careless server might."""
    return {"error": "rejected " + " and ".join(values), "message": " ".join(values)}


async def test_no_secret_reaches_logs_output_errors_results_or_reprs_under_faults(
    clients: Clients,
    knai_sandbox_server: RunningSandbox,
    wallet: SandboxAdmin,
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    rogue_factory: Callable[..., RogueServer],
) -> None:
    admin = wallet
    pending = admin.open_session(PROVIDER, USER, activate_after=0.15)
    revoked = admin.open_session(PROVIDER, USER)
    admin.revoke_session(revoked.session_id)
    expired = admin.open_session(PROVIDER, USER)
    admin.expire_session(expired.session_id)
    token = pending.session_token
    seen = Secrets(KEY, token, revoked.session_token, expired.session_token)
    twin = clients.make(knai_sandbox_server.url, provider_api_key=KEY, provider_slug=PROVIDER)
    seen.shown.append(twin.provider)

    # The sandbox: success, retries, every refusal, drops, a timeout, an unreadable 2xx.
    session = await seen.run(twin.wait_for_session(USER, poll_interval=0.05, timeout=5))
    assert session.session_token == token
    await seen.run(twin.charge(token, 10, "gpt-4"))
    admin.inject_fault("charge", status=503, times=2, body=echo(KEY, token))
    await seen.run(twin.charge(token, 10, "gpt-4"))
    admin.inject_fault("charge", status=401, body=echo(KEY, token))
    await seen.run(twin.charge(token, 10, "gpt-4"))
    await seen.run(twin.charge(token, 10**9, "gpt-4"))  # 402
    await seen.run(twin.charge(revoked.session_token, 10, "gpt-4"))  # 403
    await seen.run(twin.charge(expired.session_token, 10, "gpt-4"))  # 410
    admin.inject_fault("charge", status=502, times=3, body=echo(token))
    await seen.run(twin.charge(token, 10, "gpt-4"))
    admin.inject_fault("status", status=500, times=3, body=echo(KEY))
    await seen.run(twin.get_session(USER))
    admin.inject_fault("charge", drop="after", times=3)
    await seen.run(twin.charge(token, 10, "gpt-4"))
    admin.inject_fault("charge", drop="before")
    await seen.run(twin.charge(token, 10, "gpt-4"))
    admin.inject_fault("charge", delay=0.4, times=3)
    await seen.run(twin.charge(token, 10, "gpt-4", timeout=0.1))
    admin.inject_fault("charge", status=200, body=f"<html>{KEY} {token}</html>")
    await seen.run(twin.charge(token, 10, "gpt-4"))

    # A rogue server: secrets echoed in 2xx payloads, resets, a stall.
    rogue = rogue_factory()
    rogue.behave(_rogue_script(token))
    elsewhere = clients.make(rogue.url, provider_api_key=KEY, provider_slug=PROVIDER, timeout=0.2)
    seen.shown.append(elsewhere.provider)
    await seen.run(elsewhere.get_session(USER))
    await seen.run(elsewhere.charge(token, 10, "gpt-4"))
    await seen.run(elsewhere.get_session(USER, max_retries=0))
    await seen.run(elsewhere.charge(token, 10, "gpt-4", max_retries=1))
    await seen.run(elsewhere.charge(token, 10, "gpt-4", max_retries=0))

    # What the user saw: the secrets were in play, and every kind of outcome happened.
    kinds = [type(error).__name__ for error in seen.errors]
    assert kinds == [
        "InvalidAPIKeyError",
        "InsufficientBalanceError",
        "SessionExpiredError",
        "SessionExpiredError",
        "ServerError",
        "ServerError",
        "APIConnectionError",
        "APITimeoutError",
        "ResponseValidationError",
        "APIConnectionError",
        "APITimeoutError",
        "APITimeoutError",
    ], kinds
    # The servers did send the secrets back; the errors keep only redacted bodies.
    assert not any(KEY in repr(error.response_body) for error in seen.errors)
    assert any("<redacted>" in repr(error.response_body) for error in seen.errors)
    records = debug_logs.records
    assert any(r.name == "knai" and r.levelno == logging.DEBUG for r in records)
    assert any(r.name == "knai" and "retrying" in r.getMessage() for r in records)
    assert any(r.name.startswith("httpcore") for r in records)
    assert any(r.name.startswith("httpx") for r in records)
    assert any(r.name.startswith("knai.testing") for r in records)
    await twin.close()
    await elsewhere.close()

    # The sandbox logs each fault it plays as the test scripted it, echoing bodies included:
    # that is the test's own text, not something the SDK let out.
    records = [r for r in records if not r.getMessage().startswith("playing fault")]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s")
    seen.assert_absent([formatter.format(r) for r in records], "a log record")
    seen.assert_absent([repr(r.args) for r in records], "a log record's arguments")
    out, err = capfd.readouterr()
    seen.assert_absent([out, err], "stdout or stderr")
    seen.assert_absent(seen.texts(), "an exception, a result or a client")


def _rogue_script(token: str) -> Callable[[Request, int], Any]:
    """Requests in order: an active session echoing the token under many names, a charge
    result echoing it, a reset poll, a charge reset then stalled, a stalled charge."""
    payload = {
        "status": "active",
        "session_token": token,
        "sessionToken": token,
        "token": token,
        "access-token": token,
        "nested": [{"api_key": KEY, "client_secret": token}],
    }
    script = [
        Reply(200, payload),
        Reply(200, {**CHARGED, "session_token": token, "apiKey": KEY}),
        Reset(),
        Reset(),
        Stall(5),
        Stall(5),
    ]
    return lambda request, number: script[min(number, len(script)) - 1]


# -- redirects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("endpoint", ["status", "charge"])
@pytest.mark.parametrize("own_client", [False, True], ids=["default-client", "following-client"])
async def test_a_redirect_is_not_followed_and_its_target_sees_nothing(
    clients: Clients,
    rogue_factory: Callable[..., RogueServer],
    status: int,
    endpoint: str,
    own_client: bool,
) -> None:
    target = rogue_factory(Reply(200, CHARGED))
    moved = Reply(status, b"", headers=[("Location", f"http://localhost:{target.port}/steal")])
    origin = rogue_factory(moved)
    options: dict[str, Any] = {}
    if own_client:  # even a client set to follow redirects is not allowed to here
        http = (httpx.AsyncClient if clients.is_async else httpx.Client)(follow_redirects=True)
        options["http_client"] = http
    twin = clients.make(origin.url, **options)
    call = twin.get_session("user123") if endpoint == "status" else twin.charge("tok_1", 1, "m")
    try:
        with pytest.raises(KNAIError) as caught:
            await call
    finally:
        if own_client:
            await _close(options["http_client"])
    assert type(caught.value) is KNAIError
    assert caught.value.status_code == status
    assert "not followed" in caught.value.message
    assert caught.value.attempts == origin.count == 1
    assert origin.requests[0].header("X-Provider-API-Key") == API_KEY  # only to base_url
    assert target.count == target.connections == 0


async def _close(http: httpx.Client | httpx.AsyncClient) -> None:
    if isinstance(http, httpx.AsyncClient):
        await http.aclose()
    else:
        http.close()


# -- plain http only to loopback ------------------------------------------------------------------

REFUSED_URLS = [
    "http://api.conx.ai",
    "HTTP://api.conx.ai",
    "http://10.0.0.1:8750",
    "http://192.168.1.10",
    "http://0.0.0.0:8750",
    "http://[::ffff:10.0.0.1]",
    "http://127.0.0.1.nip.io",
    "http://localhost.evil.example",
    "http://2130706433",  # 127.0.0.1 as one number: refused rather than guessed
    "http://127.1",
    "http://user:pw@127.0.0.1",
    "http://127.0.0.1@evil.example",
    "http://evil.example#@127.0.0.1",
    "http://evil.example?@127.0.0.1",
    "ftp://127.0.0.1",
    "//127.0.0.1",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
@pytest.mark.parametrize("cls", [KNAIProvider, AsyncKNAIProvider])
def test_plain_http_to_anything_but_loopback_is_refused(cls: type[Any], url: str) -> None:
    with pytest.raises(ValueError, match="base_url") as caught:
        cls(API_KEY, SLUG, url)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8750", "http://localhost:8750", "http://[::1]:8750", "http://127.9.9.9"],
)
def test_plain_http_to_loopback_is_accepted(url: str) -> None:
    with KNAIProvider(API_KEY, SLUG, url) as provider:
        assert provider.base_url == url


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


hosts = st.one_of(
    st.sampled_from(
        ["127.0.0.1", "localhost", "[::1]", "evil.example", "10.0.0.1", "a.localhost", "[::]"]
    ),
    st.text(
        alphabet=st.sampled_from(list("0123456789abcdefx.:[]@#?/\\%\t\n\r lLocahst")), max_size=24
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Http"]),
    host=hosts,
    tail=st.sampled_from(["", ":8750", "/v1", ":80/", "@127.0.0.1", "#x", "\\@127.0.0.1"]),
)
def test_any_accepted_plain_http_base_url_points_at_loopback(
    scheme: str, host: str, tail: str
) -> None:
    """The check and httpx agree on the host: no parser trick gets plain http off the machine."""
    url = f"{scheme}://{host}{tail}"
    try:
        accepted = check_base_url(url)
    except ValueError:
        return
    try:
        parsed = httpx.URL(accepted + STATUS)
    except httpx.InvalidURL:
        return  # httpx refuses to send it at all
    if parsed.scheme == "http":
        assert _loopback(parsed.host), f"{url!r} accepted, httpx would send to {parsed.host!r}"


# -- TLS -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [KNAIProvider, AsyncKNAIProvider])
def test_the_constructor_has_no_way_to_turn_tls_verification_off(cls: type[Any]) -> None:
    parameters = inspect.signature(cls).parameters
    assert not {"verify", "ssl", "ssl_context", "insecure", "cert"} & set(parameters)
    with pytest.raises(TypeError):
        cls(API_KEY, SLUG, verify=False)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no trust store knows."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    command += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


class _TlsServer:
    """Accepts TLS connections on 127.0.0.1 and records any bytes that get through."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.handshakes_failed = 0
        self.received = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(2)
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    self.received += conn.recv(65536)
            except (ssl.SSLError, OSError):
                self.handshakes_failed += 1
            finally:
                raw.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


async def test_the_default_client_verifies_certificates_and_host_names(
    clients: Clients, self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trusted for 127.0.0.1 only, the certificate is refused for "localhost": names are checked.

    Nothing in the environment turns verification off either, nor does with_options.
    """
    for name, value in {
        "PYTHONHTTPSVERIFY": "0",
        "CURL_CA_BUNDLE": "",
        "REQUESTS_CA_BUNDLE": "",
        "HTTPX_VERIFY": "0",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SSL_CERT_FILE", str(self_signed[0]))
    server = _TlsServer(*self_signed)
    try:
        twin = clients.make(f"https://localhost:{server.port}", max_retries=0)
        for client in (twin, twin.with_options(timeout=1.0)):
            with pytest.raises(APIConnectionError) as caught:
                await client.get_session("user123")
            assert "CERTIFICATE_VERIFY_FAILED" in "".join(traceback.format_exception(caught.value))
        trusted = clients.make(f"https://127.0.0.1:{server.port}", max_retries=0, timeout=0.5)
        with pytest.raises(APIConnectionError) as answered:  # the handshake passes; no answer
            await trusted.get_session("user123")
    finally:
        server.close()
    assert "CERTIFICATE_VERIFY_FAILED" not in "".join(traceback.format_exception(answered.value))
    assert server.received.startswith(b"GET /providers/session/status")  # only the trusted one


async def test_a_server_with_an_untrusted_certificate_never_receives_the_request(
    clients: Clients, self_signed: tuple[Path, Path]
) -> None:
    server = _TlsServer(*self_signed)
    try:
        twin = clients.make(f"https://127.0.0.1:{server.port}", max_retries=1)
        with pytest.raises(APIConnectionError) as caught:
            await twin.get_session("user123")
        with pytest.raises(APIConnectionError) as charged:
            await twin.charge("tok_1", 1, "gpt-4")
    finally:
        server.close()
    assert not isinstance(caught.value, APITimeoutError)
    assert "CERTIFICATE_VERIFY_FAILED" in "".join(traceback.format_exception(caught.value))
    assert charged.value.may_have_been_applied is False  # nothing was sent
    assert server.received == b""  # not a byte of a request, so not the key
    assert server.handshakes_failed == 4


async def test_only_ones_own_client_can_skip_verification(
    clients: Clients, self_signed: tuple[Path, Path]
) -> None:
    """The one documented way: pass an httpx client built with verify=False."""
    server = _TlsServer(*self_signed)
    http = (httpx.AsyncClient if clients.is_async else httpx.Client)(verify=False)
    try:
        twin = clients.make(f"https://127.0.0.1:{server.port}", max_retries=0, http_client=http)
        with pytest.raises(APIConnectionError):  # the server hangs up after reading
            await twin.get_session("user123")
    finally:
        await _close(http)
        server.close()
    assert server.received.startswith(b"GET /providers/session/status")
