"""`usage_of`: read the usage of an OpenAI or Anthropic response, duck-typed.

Nothing here imports an LLM SDK: the SDKs' pydantic objects are read through
their attributes and decoded JSON through its keys, so one reader serves the
SDK objects, raw JSON and OpenAI-shaped responses of other tools (LiteLLM).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from ._usage import Usage

__all__ = ["field", "model_of", "read_usage", "usage_of"]


def field(obj: Any, name: str) -> Any:
    """`obj[name]` for a mapping, `obj.name` otherwise; None when absent."""
    if type(obj) is dict:
        return cast("dict[str, Any]", obj).get(name)  # decoded JSON: its keys are strings
    # The SDKs' pydantic objects keep fields in __dict__ and unknown keys in
    # __pydantic_extra__: reading those directly skips pydantic's __getattr__,
    # which costs microseconds for every absent optional field.
    fields = getattr(obj, "__dict__", None)
    if fields is not None and name in fields:
        return fields[name]
    extra = getattr(obj, "__pydantic_extra__", None)
    if extra is not None:
        return extra.get(name)
    if isinstance(obj, Mapping):
        return cast("Mapping[str, Any]", obj).get(name)
    return getattr(obj, name, None)


def _count(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"usage field {where} is not a token count: {type(value).__name__}")
    if value < 0:
        raise ValueError(f"usage field {where} is negative: {value}")
    return value


def _is_usage(obj: Any) -> bool:
    return (
        field(obj, "prompt_tokens") is not None
        or field(obj, "input_tokens") is not None
        or field(obj, "output_tokens") is not None
    )


def read_usage(usage: Any) -> Usage:
    """Split one usage object (or its dict) into a `Usage`.

    Raises:
        ValueError: A count is not a non-negative int, or the parts do not add up.
    """
    if isinstance(usage, Usage):
        return usage
    prompt = field(usage, "prompt_tokens")
    if prompt is not None:
        # OpenAI Chat Completions and embeddings: prompt_tokens is all input,
        # cache reads and writes included.
        details = field(usage, "prompt_tokens_details")
        cached = _count(field(details, "cached_tokens"), "prompt_tokens_details.cached_tokens")
        written = _count(
            field(details, "cache_write_tokens"), "prompt_tokens_details.cache_write_tokens"
        )
        total = _count(prompt, "prompt_tokens")
        output = _count(field(usage, "completion_tokens"), "completion_tokens")
        reasoning = _count(
            field(field(usage, "completion_tokens_details"), "reasoning_tokens"),
            "completion_tokens_details.reasoning_tokens",
        )
        return _split(total, cached, written, output, reasoning)
    details = field(usage, "input_tokens_details")
    if details is not None:
        # OpenAI Responses API: input_tokens include the cached tokens.
        cached = _count(field(details, "cached_tokens"), "input_tokens_details.cached_tokens")
        written = _count(
            field(details, "cache_write_tokens"), "input_tokens_details.cache_write_tokens"
        )
        total = _count(field(usage, "input_tokens"), "input_tokens")
        output = _count(field(usage, "output_tokens"), "output_tokens")
        reasoning = _count(
            field(field(usage, "output_tokens_details"), "reasoning_tokens"),
            "output_tokens_details.reasoning_tokens",
        )
        return _split(total, cached, written, output, reasoning)
    # Anthropic Messages: input_tokens exclude cache reads and cache writes.
    output = _count(field(usage, "output_tokens"), "output_tokens")
    reasoning = _count(
        field(field(usage, "output_tokens_details"), "thinking_tokens"),
        "output_tokens_details.thinking_tokens",
    )
    return Usage(
        _count(field(usage, "input_tokens"), "input_tokens"),
        _count(field(usage, "cache_read_input_tokens"), "cache_read_input_tokens"),
        _count(field(usage, "cache_creation_input_tokens"), "cache_creation_input_tokens"),
        output,
        min(reasoning, output),
    )


def _split(total: int, cached: int, written: int, output: int, reasoning: int) -> Usage:
    if cached + written > total:
        raise ValueError(
            f"usage reports {cached + written} cached input tokens of only {total} input tokens"
        )
    return Usage(total - cached - written, cached, written, output, min(reasoning, output))


def usage_of(obj: Any) -> Usage:
    """The usage a response reports, split into disjoint parts.

    Reads OpenAI Chat Completions (`ChatCompletion`, the usage-bearing last
    `ChatCompletionChunk`), the OpenAI Responses API `Response`, OpenAI
    embeddings responses, Anthropic `Message`, their usage objects, a `Usage`,
    and the decoded JSON (dicts) of each.

    Args:
        obj: The response, its `.usage`, or their dicts.

    Returns:
        The `Usage`.

    Raises:
        ValueError: `obj` carries no usage (the message names its type), or a
            count in it is malformed.

    Example:
        >>> usage_of({"usage": {"prompt_tokens": 100, "completion_tokens": 7,
        ...     "prompt_tokens_details": {"cached_tokens": 80}}}).cached_input_tokens
        80
    """
    if isinstance(obj, Usage):
        return obj
    usage = field(obj, "usage")
    if usage is not None:
        return read_usage(usage)
    if _is_usage(obj):
        return read_usage(obj)
    raise ValueError(f"{type(obj).__name__} object carries no usage")


def model_of(obj: Any) -> str | None:
    """The model id a response names, or None."""
    model = field(obj, "model")
    return model if isinstance(model, str) and model else None
