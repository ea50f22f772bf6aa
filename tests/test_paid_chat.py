"""examples/paid_chat end to end: the real `openai` SDK as the end user, the example
served by uvicorn on 127.0.0.1, the sandbox as the wallet and FakeLLM upstream.

Prices: 1 wallet token per prompt token, 10 per completion token, so the
ledger says exactly which usage was charged.
"""

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from examples.paid_chat.app import app_from_env, build_app

from knai import AsyncKNAIProvider
from knai.metering import Price, PriceTable
from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, FakeLLM, RunningSandbox
from knai.testing._demo_story import PacedTransport
from knai.testing._serve_asgi import serve_asgi
from knai.testing.pytest_plugin import quick_retries

PROMPT = [{"role": "user", "content": "tell me a story"}]  # 4 prompt tokens at the fake
# The fake sends a whole answer at once on loopback; a real LLM streams over
# seconds: the demo's pacing transport hands it on one event per millisecond.
PRICES = PriceTable(default=Price(1, 10))


@dataclass
class Deployment:
    url: str
    fake: FakeLLM
    sandbox: RunningSandbox
    keys: dict[str, str]

    def client(self, user: str) -> openai.OpenAI:
        """The end user's SDK client, with their API key at the paid-chat service."""
        return openai.OpenAI(api_key=self.key_of(user), base_url=f"{self.url}/v1", max_retries=0)

    def key_of(self, user: str) -> str:
        return next(key for key, name in self.keys.items() if name == user)

    def ledger(self, user: str) -> int:
        return sum(c.amount_tokens for c in self.sandbox.admin.charges(DEMO_PROVIDER_SLUG, user))

    def balance(self, user: str) -> int:
        return self.sandbox.admin.balance(DEMO_PROVIDER_SLUG, user)


@pytest.fixture
def deployment(knai_sandbox_server: RunningSandbox) -> Iterator[Deployment]:
    users = ["alice", "bob", "carol"]
    keys = {f"sk-{name}-{secrets.token_hex(8)}": name for name in users}
    admin = knai_sandbox_server.admin
    admin.create_user(DEMO_PROVIDER_SLUG, "alice", balance=100_000)
    admin.open_session(DEMO_PROVIDER_SLUG, "alice")
    admin.create_user(DEMO_PROVIDER_SLUG, "bob", balance=2_500)
    admin.open_session(DEMO_PROVIDER_SLUG, "bob")
    admin.create_user(DEMO_PROVIDER_SLUG, "carol", balance=100_000)  # no session
    fake = FakeLLM(reply_words=8)
    with fake.serve() as llm:
        wallet = AsyncKNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, knai_sandbox_server.url)
        quick_retries(wallet)
        upstream = httpx.AsyncClient(base_url=llm.base_url, timeout=10, transport=PacedTransport())
        with serve_asgi(build_app(keys, wallet, upstream, PRICES)) as url:
            yield Deployment(url, fake, knai_sandbox_server, keys)


def test_a_chat_is_answered_and_charged_its_usage(deployment: Deployment) -> None:
    completion = deployment.client("alice").chat.completions.create(model="gpt-4o", messages=PROMPT)
    assert completion.choices[0].message.content == "tell me a story tell me a story"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 8)
    assert deployment.ledger("alice") == 4 * 1 + 8 * 10
    assert deployment.balance("alice") == 100_000 - 84


def test_a_streamed_chat_is_charged_the_usage_the_upstream_reported(deployment: Deployment) -> None:
    """The user did not ask for usage; the service asked the upstream for it anyway."""
    stream = deployment.client("alice").chat.completions.create(
        model="gpt-4o", messages=PROMPT, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tell me a story tell me a story"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert deployment.fake.requests[-1].body["stream_options"] == {"include_usage": True}
    assert deployment.ledger("alice") == 84


def test_running_dry_mid_stream_ends_the_stream_and_charges_what_was_streamed(
    deployment: Deployment,
) -> None:
    """bob holds 2,500 tokens; a 1,000-word answer costs 10,004. The stream stops after
    the increments his balance covered, and the ledger holds exactly those."""
    deployment.fake.reply_words = 1_000
    stream = deployment.client("bob").chat.completions.create(
        model="gpt-4o", messages=PROMPT, stream=True
    )
    words: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        words.extend(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert 200 <= len([w for w in words if w]) < 1_000
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["type"] == "insufficient_balance"
    assert deployment.ledger("bob") == error["charged"] == 2_000  # two increments of 1,000
    assert deployment.balance("bob") == 500


def test_a_user_without_a_session_gets_402(deployment: Deployment) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        deployment.client("carol").chat.completions.create(model="gpt-4o", messages=PROMPT)
    assert raised.value.status_code == 402
    body = raised.value.response.json()["detail"]
    assert body["reason"] == "no_active_session"
    assert body["provider_username"] == "carol"
    assert "hint" in body
    assert deployment.fake.requests == []  # the upstream was not paid for either


def test_a_streamed_request_without_a_session_gets_402_before_any_event(
    deployment: Deployment,
) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        deployment.client("carol").chat.completions.create(
            model="gpt-4o", messages=PROMPT, stream=True
        )
    assert raised.value.status_code == 402


def test_an_unknown_api_key_gets_401(deployment: Deployment) -> None:
    client = openai.OpenAI(api_key="sk-nobody", base_url=f"{deployment.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=PROMPT)


def test_a_body_without_a_model_is_400_not_a_server_error(deployment: Deployment) -> None:
    answer = httpx.post(
        f"{deployment.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {deployment.key_of('alice')}"},
        content=b"[1, 2]",
    )
    assert answer.status_code == 400
    assert deployment.ledger("alice") == 0


def test_configured_from_the_environment_the_upstream_defaults_to_a_fake_llm(
    knai_sandbox_server: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`uvicorn --factory examples.paid_chat.app:app_from_env` with no UPSTREAM_BASE_URL."""
    admin = knai_sandbox_server.admin
    admin.create_user(DEMO_PROVIDER_SLUG, "dora", balance=1_000)
    admin.open_session(DEMO_PROVIDER_SLUG, "dora")
    monkeypatch.setenv("PAID_CHAT_KEYS", "sk-dora=dora,sk-eve=eve")
    monkeypatch.setenv("KNAI_API_KEY", DEMO_API_KEY)
    monkeypatch.setenv("KNAI_PROVIDER_SLUG", DEMO_PROVIDER_SLUG)
    monkeypatch.setenv("KNAI_BASE_URL", knai_sandbox_server.url)
    monkeypatch.delenv("UPSTREAM_BASE_URL", raising=False)
    with serve_asgi(app_from_env()) as url:
        client = openai.OpenAI(api_key="sk-dora", base_url=f"{url}/v1", max_retries=0)
        completion = client.chat.completions.create(model="gpt-4o", messages=PROMPT)
    assert completion.usage is not None
    assert admin.balance(DEMO_PROVIDER_SLUG, "dora") == 1_000 - completion.usage.total_tokens
