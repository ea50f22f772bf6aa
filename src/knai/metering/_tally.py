"""The pure bookkeeping of a metered stream: chunks in, increments due out.

No I/O and no clock: what is charged, and under which increment number,
depends only on the chunks seen, so replaying the same chunks after a crash
replays the same idempotency keys with the same amounts.

The lower bound of what was streamed: a non-empty content delta (text,
refusal, tool-call arguments, reasoning text) is at least one output token;
Anthropic's `message_start` gives the input exactly and its `message_delta`
the cumulative output exactly. The provider's usage report, when it comes,
replaces the bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ._prices import Price
from ._readers import field, read_usage
from ._usage import Usage

__all__ = ["StreamTally"]

_CHAT, _EVENT, _OTHER, _DICT, _CHAT_OBJECT = 1, 2, 3, 4, 5

# Responses API events whose non-empty `delta` is model output.
_RESPONSE_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
    }
)
# Responses API events that carry the final `response` (and its usage).
_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _kind_of(chunk: Any) -> int:
    if field(chunk, "choices") is not None:
        return _CHAT
    if isinstance(field(chunk, "type"), str):
        return _EVENT
    return _OTHER


def _has_output(delta: Any) -> bool:
    if delta is None:
        return False
    return bool(
        field(delta, "content")
        or field(delta, "refusal")
        or field(delta, "tool_calls")
        or field(delta, "reasoning_content")
    )


class StreamTally:
    """Counts a stream's usage as chunks pass and says when an increment is due.

    Args:
        price: The price of the stream's model.
        step: The least amount of an increment, in wallet tokens (>= 1).
    """

    __slots__ = (
        "_base",
        "_denominator",
        "_due_at",
        "_kinds",
        "_out_rate",
        "_output",
        "_rates",
        "deltas",
        "increments",
        "price",
        "report",
        "scheduled",
        "start",
        "step",
    )

    def __init__(self, price: Price, step: int) -> None:
        self.price = price
        self.step = step
        self.deltas = 0
        self.start: Usage | None = None
        self.report: Usage | None = None
        self.scheduled = 0
        self.increments = 0
        self._denominator = price.denominator
        # Each rate times the denominator: the scaled price of one token of its kind.
        self._rates = (
            price.scaled(Usage(input_tokens=1)),
            price.scaled(Usage(cached_input_tokens=1)),
            price.scaled(Usage(cache_write_tokens=1)),
        )
        self._out_rate = price.scaled(Usage(output_tokens=1))
        self._base = 0
        self._output = 0
        self._kinds: dict[type[object], int] = {}
        self._set_due()

    # -- feeding -------------------------------------------------------------

    def feed(self, chunk: object) -> int:
        """Account for one chunk; return the amount of the increment now due, or 0."""
        cls = type(chunk)
        kind = self._kinds.get(cls)
        if kind is None:
            kind = _DICT if isinstance(chunk, Mapping) else _kind_of(chunk)
            self._kinds[cls] = _CHAT_OBJECT if kind == _CHAT else kind
        if kind == _DICT:
            kind = _kind_of(chunk)
        if kind == _CHAT_OBJECT:
            grew = self._chat_object(chunk)
        elif kind == _CHAT:
            grew = self._chat(chunk)
        elif kind == _EVENT:
            grew = self._event(chunk)
        else:
            return 0
        if grew and self._base + self._output * self._out_rate >= self._due_at:
            return self._schedule()
        return 0

    def _chat(self, chunk: Any) -> bool:
        counted = 0
        for choice in field(chunk, "choices") or ():
            if _has_output(field(choice, "delta")):
                counted += 1
        usage = field(chunk, "usage")
        if usage is not None:
            self.report = read_usage(usage)
        return self._count(counted)

    def _chat_object(self, chunk: Any) -> bool:
        # The hot path of an SDK stream: plain attribute reads, falling back to
        # the duck-typed reader for an object that lacks one.
        try:
            counted = 0
            for choice in chunk.choices:
                delta = choice.delta
                if delta is not None and (delta.content or _has_output(delta)):
                    counted += 1
            usage = chunk.usage
        except (AttributeError, TypeError):  # no such attribute, or choices is None
            # A class of several shapes (a generic event object): read this one by shape.
            return self._event(chunk) if _kind_of(chunk) == _EVENT else self._chat(chunk)
        if usage is not None:
            self.report = read_usage(usage)
        return self._count(counted)

    def _count(self, counted: int) -> bool:
        if not counted:
            return False
        self.deltas += counted
        if self.deltas > self._output:
            self._output = self.deltas
            return True
        return False

    def _event(self, event: Any) -> bool:
        kind = field(event, "type")
        handler = self._EVENTS.get(kind)
        if handler is not None:
            return handler(self, event)
        # Without a type, an object of a class first seen as an event is a chat chunk.
        return False if isinstance(kind, str) else self._chat(event)

    def _chunk_event(self, event: Any) -> bool:
        # openai's `chat.completions.stream()` helper wraps each raw chunk in a
        # "chunk" event (its "content.delta" events repeat them and are ignored).
        chunk = field(event, "chunk")
        return False if chunk is None else self._chat(chunk)

    def _block_delta(self, event: Any) -> bool:
        delta = field(event, "delta")
        if field(delta, "text") or field(delta, "thinking") or field(delta, "partial_json"):
            return self._count(1)
        return False

    def _response_delta(self, event: Any) -> bool:
        return self._count(1) if field(event, "delta") else False

    def _response_end(self, event: Any) -> bool:
        usage = field(field(event, "response"), "usage")
        if usage is not None:
            self.report = read_usage(usage)
        return False

    def _message_start(self, event: Any) -> bool:
        usage = field(field(event, "message"), "usage")
        if usage is None:
            return False
        self.start = read_usage(usage)
        self._base = self._input_scaled(self.start)
        self._output = max(self._output, self.start.output_tokens)
        return True

    def _message_delta(self, event: Any) -> bool:
        usage = field(event, "usage")
        if usage is None:
            return False
        # Anthropic's counts here are cumulative: they replace, never add.
        start = self.start or Usage()
        parts = {
            "input_tokens": start.input_tokens,
            "cache_read_input_tokens": start.cached_input_tokens,
            "cache_creation_input_tokens": start.cache_write_tokens,
        }
        for name in parts:
            value = field(usage, name)
            if value is not None:
                parts[name] = value
        parts["output_tokens"] = field(usage, "output_tokens")
        parts["output_tokens_details"] = field(usage, "output_tokens_details")
        self.report = read_usage(parts)
        return False

    # -- amounts -------------------------------------------------------------

    def _input_scaled(self, usage: Usage) -> int:
        rate_in, rate_cached, rate_write = self._rates
        return (
            usage.input_tokens * rate_in
            + usage.cached_input_tokens * rate_cached
            + usage.cache_write_tokens * rate_write
        )

    def _set_due(self) -> None:
        # ceil(scaled / d) >= scheduled + step  <=>  scaled > (scheduled + step - 1) * d
        self._due_at = (self.scheduled + self.step - 1) * self._denominator + 1

    def _schedule(self) -> int:
        scaled = self._base + self._output * self._out_rate
        amount = -(-scaled // self._denominator) - self.scheduled
        self.scheduled += amount
        self.increments += 1
        self._set_due()
        return amount

    @property
    def exact(self) -> bool:
        """Whether the provider reported the stream's usage."""
        return self.report is not None

    @property
    def bound(self) -> Usage:
        """The lower bound of what was streamed."""
        start = self.start or Usage()
        return Usage(
            start.input_tokens,
            start.cached_input_tokens,
            start.cache_write_tokens,
            self._output,
            min(start.reasoning_tokens, self._output),
        )

    @property
    def usage(self) -> Usage:
        """The reported usage, else the lower bound."""
        return self.report if self.report is not None else self.bound

    def total(self) -> int:
        """What the whole stream costs: the reported usage's price, else the bound's."""
        return self.price.amount(self.usage)

    def rest(self) -> int:
        """What settlement charges: the total less every scheduled increment (>= 0)."""
        return max(0, self.total() - self.scheduled)

    # An event's handler by its `type`, built in the class body so that the
    # handlers stay private to the class.
    _EVENTS: ClassVar[dict[Any, Callable[[StreamTally, Any], bool]]] = {
        "chunk": _chunk_event,
        "content_block_delta": _block_delta,
        "message_start": _message_start,
        "message_delta": _message_delta,
        **dict.fromkeys(_RESPONSE_DELTAS, _response_delta),
        **dict.fromkeys(_RESPONSE_ENDS, _response_end),
    }
