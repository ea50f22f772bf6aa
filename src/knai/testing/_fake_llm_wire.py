"""What the fake LLM answers, as pure functions of the request (no I/O).

The rule, the same for both APIs:

- prompt tokens = the number of whitespace-separated words in the text of
  every message (and the Anthropic ``system`` prompt), at least 1;
- the reply = the words of the last user message, repeated in order until it
  has ``reply_words`` words (``"ok"`` when that message has no words), cut to
  the request's ``max_tokens`` / ``max_completion_tokens`` when smaller (then
  the finish reason is ``"length"`` / ``"max_tokens"``);
- completion tokens = the words in the reply; a stream sends one word per delta.

Of the prompt tokens, ``cached_tokens`` are reported as read from the prompt
cache (OpenAI ``prompt_tokens_details.cached_tokens``; Anthropic
``cache_read_input_tokens``) and ``cache_write_tokens`` as written to it
(Anthropic ``cache_creation_input_tokens``). OpenAI's ``prompt_tokens`` counts
them all; Anthropic's ``input_tokens`` counts the rest, as the real APIs do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._json import JSONValue

__all__ = [
    "BadRequestError",
    "Plan",
    "anthropic_events",
    "anthropic_message",
    "openai_chunks",
    "openai_completion",
    "plan",
    "sse",
]

Api = Literal["openai", "anthropic"]
CREATED = 1_700_000_000  # a fixed `created` stamp keeps every answer reproducible


class BadRequestError(ValueError):
    """The request is not one the API accepts (answered with a 400)."""


@dataclass(frozen=True)
class Plan:
    """What one request is answered with."""

    model: str
    words: tuple[str, ...]
    prompt_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    truncated: bool

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def pieces(self) -> list[str]:
        """The reply cut into stream deltas: one word each, joined they give `text`."""
        return [word if i == 0 else f" {word}" for i, word in enumerate(self.words)]


def _words(content: JSONValue) -> list[str]:
    """Words of a message's content: a string, or a list of parts with text."""
    if isinstance(content, str):
        return content.split()
    if isinstance(content, list):
        return [w for part in content if isinstance(part, dict) for w in _words(part.get("text"))]
    return []


def plan(
    body: Mapping[str, JSONValue],
    api: Api,
    *,
    reply_words: int,
    cached_tokens: int,
    cache_write_tokens: int,
) -> Plan:
    """Decide the answer to `body`; raises `BadRequestError` for a malformed request."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("model: a non-empty string is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("messages: a non-empty array is required")
    chat = [m for m in messages if isinstance(m, dict)]
    if len(chat) != len(messages):
        raise BadRequestError("messages: every message must be an object")
    prompt = [w for m in chat for w in _words(m.get("content"))]
    if api == "anthropic":
        prompt += _words(body.get("system"))
    users = [m for m in chat if m.get("role") == "user"]
    seed = tuple(_words(users[-1].get("content"))) if users else ()
    seed = seed or ("ok",)
    limit = _max_tokens(body, api)
    count = reply_words if limit is None else min(reply_words, limit)
    prompt_tokens = max(1, len(prompt))
    read = min(cached_tokens, prompt_tokens)
    return Plan(
        model=model,
        words=tuple(seed[i % len(seed)] for i in range(count)),
        prompt_tokens=prompt_tokens,
        cached_tokens=read,
        cache_write_tokens=min(cache_write_tokens, prompt_tokens - read),
        truncated=count < reply_words,
    )


def _max_tokens(body: Mapping[str, Any], api: Api) -> int | None:
    names = ("max_completion_tokens", "max_tokens") if api == "openai" else ("max_tokens",)
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequestError(f"{name}: a positive integer is required")
        return value
    return None


def sse(data: Mapping[str, Any] | str, event: str | None = None) -> bytes:
    """One server-sent event: an optional ``event:`` line and a ``data:`` line."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


# -- OpenAI Chat Completions --------------------------------------------------


def _openai_usage(p: Plan) -> dict[str, Any]:
    completion = len(p.words)
    return {
        "prompt_tokens": p.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": p.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": p.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_envelope(p: Plan, ident: str, kind: str) -> dict[str, Any]:
    return {
        "id": ident,
        "object": kind,
        "created": CREATED,
        "model": p.model,
        "system_fingerprint": "fp_fakellm",
    }


def openai_completion(p: Plan, ident: str) -> dict[str, Any]:
    """The ``chat.completion`` object of a non-streamed request."""
    message = {"role": "assistant", "content": p.text, "refusal": None}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": "length" if p.truncated else "stop",
    }
    return {
        **_openai_envelope(p, ident, "chat.completion"),
        "choices": [choice],
        "usage": _openai_usage(p),
    }


def openai_chunks(p: Plan, ident: str, *, include_usage: bool) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a stream, before ``[DONE]``.

    With ``include_usage`` every chunk carries ``"usage": null`` and one last
    chunk with no choices carries the usage, as the real API sends them.
    """
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        envelope = _openai_envelope(p, ident, "chat.completion.chunk")
        return {**envelope, "choices": [choice], **extra}

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in p.pieces:
        yield chunk({"content": piece})
    yield chunk({}, "length" if p.truncated else "stop")
    if include_usage:
        envelope = _openai_envelope(p, ident, "chat.completion.chunk")
        yield {**envelope, "choices": [], "usage": _openai_usage(p)}


# -- Anthropic Messages -------------------------------------------------------


def _anthropic_usage(p: Plan, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": p.prompt_tokens - p.cached_tokens - p.cache_write_tokens,
        "cache_creation_input_tokens": p.cache_write_tokens,
        "cache_read_input_tokens": p.cached_tokens,
        "output_tokens": output_tokens,
    }


def _stop_reason(p: Plan) -> str:
    return "max_tokens" if p.truncated else "end_turn"


def anthropic_message(p: Plan, ident: str) -> dict[str, Any]:
    """The ``message`` object of a non-streamed request."""
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": p.model,
        "content": [{"type": "text", "text": p.text}],
        "stop_reason": _stop_reason(p),
        "stop_sequence": None,
        "usage": _anthropic_usage(p, len(p.words)),
    }


def anthropic_events(p: Plan, ident: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a stream, in the real API's order.

    ``message_start`` reports 1 output token, as the real API does; the
    ``message_delta`` usage is cumulative and final.
    """
    start: dict[str, Any] = {**anthropic_message(p, ident), "content": [], "stop_reason": None}
    start["usage"] = _anthropic_usage(p, 1)
    yield "message_start", {"type": "message_start", "message": start}
    block = {"type": "text", "text": ""}
    yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    yield "ping", {"type": "ping"}
    for piece in p.pieces:
        delta = {"type": "text_delta", "text": piece}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(p), "stop_sequence": None},
            "usage": _anthropic_usage(p, len(p.words)),
        },
    )
    yield "message_stop", {"type": "message_stop"}
