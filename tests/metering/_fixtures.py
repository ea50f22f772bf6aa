"""The JSON fixtures as the real SDKs' objects (openai, anthropic: test-only dependencies).

The fixtures were written from the providers' API references; validating them
through the SDKs' own models proves they have the shapes the SDKs hand out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic.types
import openai.types
import openai.types.chat
import openai.types.responses
from pydantic import TypeAdapter

FIXTURES = Path(__file__).parent / "fixtures"

_RESPONSE_EVENTS: TypeAdapter[Any] = TypeAdapter(openai.types.responses.ResponseStreamEvent)
_ANTHROPIC_EVENTS: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)


def raw(name: str) -> Any:
    """The decoded JSON of `fixtures/<name>.json`."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def chat_completion(name: str) -> openai.types.chat.ChatCompletion:
    return openai.types.chat.ChatCompletion.model_validate(raw(name))


def chat_chunks(name: str) -> list[openai.types.chat.ChatCompletionChunk]:
    return [openai.types.chat.ChatCompletionChunk.model_validate(c) for c in raw(name)]


def response(name: str) -> openai.types.responses.Response:
    return openai.types.responses.Response.model_validate(raw(name))


def response_events(name: str) -> list[Any]:
    return [_RESPONSE_EVENTS.validate_python(e) for e in raw(name)]


def embeddings(name: str) -> openai.types.CreateEmbeddingResponse:
    return openai.types.CreateEmbeddingResponse.model_validate(raw(name))


def message(name: str) -> anthropic.types.Message:
    return anthropic.types.Message.model_validate(raw(name))


def anthropic_events(name: str) -> list[Any]:
    return [_ANTHROPIC_EVENTS.validate_python(e) for e in raw(name)]


# Each stream fixture in its SDK form and as decoded SSE JSON.
STREAMS = {
    "chat_stream_usage": chat_chunks,
    "chat_stream_no_usage": chat_chunks,
    "chat_stream_tool_reasoning": chat_chunks,
    "response_stream": response_events,
    "anthropic_stream": anthropic_events,
}
