"""hypothesis: whatever the chunks and the prices, a stream never charges more than it cost.

Streams are drawn in each understood shape (Chat Completions chunks,
Responses API events, Anthropic events, as decoded JSON), from a true usage the
provider would report; they may end early (a disconnect), before the report.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from knai.metering import Price, PriceTable, Usage
from knai.metering._tally import StreamTally

rates = st.fractions(min_value=0, max_value=20, max_denominator=1000)
prices = st.builds(Price, rates, rates, st.none() | rates, st.none() | rates)
tables = st.builds(
    PriceTable,
    st.dictionaries(st.sampled_from(["m", "m*", "m-1", "x*"]), prices, max_size=3),
    st.none() | prices,
).filter(lambda table: table.lookup("m-1") is not None)


@st.composite
def true_usages(draw: st.DrawFn, deltas: int) -> Usage:
    output = draw(st.integers(deltas, deltas + 500))
    return Usage(
        draw(st.integers(0, 5000)),
        draw(st.integers(0, 5000)),
        draw(st.integers(0, 5000)),
        output,
        draw(st.integers(0, output)),
    )


def chat(texts: list[str], usage: Usage) -> list[Any]:
    stream: list[Any] = [{"choices": [{"delta": {"role": "assistant", "content": ""}}]}]
    stream += [{"choices": [{"delta": {"content": text}}]} for text in texts]
    report = {
        "prompt_tokens": usage.total_input_tokens,
        "completion_tokens": usage.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
    return [*stream, {"choices": [], "usage": report}]


def responses(texts: list[str], usage: Usage) -> list[Any]:
    stream: list[Any] = [{"type": "response.created", "response": {"usage": None}}]
    stream += [{"type": "response.output_text.delta", "delta": text} for text in texts]
    report = {
        "input_tokens": usage.total_input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
    return [*stream, {"type": "response.completed", "response": {"usage": report}}]


def anthropic(texts: list[str], usage: Usage, first_output: int) -> list[Any]:
    start = {
        "input_tokens": usage.input_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "output_tokens": first_output,
    }
    stream: list[Any] = [{"type": "message_start", "message": {"usage": start}}]
    stream += [
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": text}}
        for text in texts
    ]
    final = {
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"thinking_tokens": usage.reasoning_tokens},
    }
    return [*stream, {"type": "message_delta", "delta": {}, "usage": final}]


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Any], Usage]:
    texts = draw(st.lists(st.sampled_from(["", "a", " word", "🙂"]), max_size=60))
    usage = draw(true_usages(sum(1 for text in texts if text)))
    shape = draw(st.sampled_from(["chat", "responses", "anthropic"]))
    if shape == "chat":
        stream = chat(texts, usage)
    elif shape == "responses":
        stream = responses(texts, usage)
    else:
        stream = anthropic(texts, usage, draw(st.integers(0, usage.output_tokens)))
    cut = draw(st.none() | st.integers(0, len(stream)))
    return (stream if cut is None else stream[:cut]), usage


@settings(max_examples=300, deadline=None)
@given(streams(), tables, st.integers(1, 3000))
def test_never_more_than_the_exact_price_and_equal_when_reported(
    drawn: tuple[list[Any], Usage], table: PriceTable, step: int
) -> None:
    stream, usage = drawn
    price = table.price("m-1")
    tally = StreamTally(price, step)
    increments = [amount for amount in map(tally.feed, stream) if amount]
    total = sum(increments) + tally.rest()
    assert all(amount >= step for amount in increments)
    assert total <= table.amount("m-1", usage)
    if tally.exact:
        assert tally.usage == usage
        assert total == table.amount("m-1", usage)
    else:
        assert total == max(sum(increments), price.amount(tally.bound))
    # Each increment was a lower bound when it fell due: never past what the chunks proved.
    assert sum(increments) <= price.amount(tally.bound)
