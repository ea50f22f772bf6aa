"""`Usage` and `usage_of`: every supported response shape, as SDK objects and as dicts."""

from __future__ import annotations

from typing import Any

import pytest

from knai.metering import Usage, usage_of
from tests.metering import _fixtures as fx


def test_usage_adds_part_by_part() -> None:
    total = Usage(1, 2, 3, 10, 4) + Usage(10, 20, 30, 100, 40)
    assert total == Usage(11, 22, 33, 110, 44)
    assert total.total_input_tokens == 66


def test_usage_is_frozen() -> None:
    usage = Usage(1)
    with pytest.raises(AttributeError):
        usage.input_tokens = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"input_tokens": -1}, ValueError, "input_tokens"),
        ({"output_tokens": 1.5}, TypeError, "output_tokens"),
        ({"cached_input_tokens": True}, TypeError, "cached_input_tokens"),
        ({"output_tokens": 1, "reasoning_tokens": 2}, ValueError, "reasoning_tokens"),
    ],
)
def test_usage_refuses_bad_counts_naming_them(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        Usage(**kwargs)


# (fixture loader, fixture, expected usage): cache reads and writes split out of
# OpenAI's inclusive prompt counts, Anthropic's exclusive ones kept as they are.
CASES = [
    (fx.chat_completion, "chat_completion_cached_reasoning", Usage(93, 1024, 0, 46, 32)),
    (fx.chat_completion, "chat_completion_plain", Usage(19, 0, 0, 10, 0)),
    (fx.response, "response_cached_reasoning", Usage(176, 1152, 0, 372, 320)),
    (fx.embeddings, "embeddings", Usage(8)),
    (fx.message, "anthropic_message_cached", Usage(21, 1800, 188, 393, 0)),
    (fx.message, "anthropic_message_thinking", Usage(45, 0, 0, 87, 70)),
]


@pytest.mark.parametrize(("load", "name", "expected"), CASES, ids=[c[1] for c in CASES])
def test_usage_of_reads_sdk_objects_their_usage_and_their_json(
    load: Any, name: str, expected: Usage
) -> None:
    """The SDK object, its `.usage`, the raw JSON and its usage dict all read the same."""
    sdk = load(name)
    assert usage_of(sdk) == expected
    assert usage_of(sdk.usage) == expected
    assert usage_of(fx.raw(name)) == expected
    assert usage_of(fx.raw(name)["usage"]) == expected


def test_usage_of_reads_the_usage_chunk_of_a_chat_stream() -> None:
    last = fx.chat_chunks("chat_stream_usage")[-1]
    assert usage_of(last) == Usage(128, 1920, 0, 12, 0)


def test_usage_of_splits_openai_cache_writes_out_of_the_prompt() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300},
    }
    assert usage_of({"usage": usage}) == Usage(100, 600, 300, 5)
    responses = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    assert usage_of(responses) == Usage(100, 600, 300, 5)


def test_usage_of_a_usage_is_itself() -> None:
    usage = Usage(3, 2, 1, 9, 4)
    assert usage_of(usage) is usage


@pytest.mark.parametrize(
    "obj",
    [fx.chat_chunks("chat_stream_usage")[1], {"choices": []}, object(), None],
    ids=["chunk-without-usage", "dict", "object", "None"],
)
def test_usage_of_an_object_without_usage_names_its_type(obj: Any) -> None:
    with pytest.raises(ValueError, match=type(obj).__name__):
        usage_of(obj)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "12", "completion_tokens": 3},
        {"prompt_tokens": 12, "completion_tokens": -3},
        {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}},
        {"input_tokens": 5, "output_tokens": 2.0},
    ],
)
def test_usage_of_malformed_counts_is_a_value_error(usage: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="usage"):
        usage_of({"usage": usage})
