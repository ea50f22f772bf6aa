"""How a metered stream counts: lower bounds while it flows, the report at its end.

`StreamTally` is the pure part of `Meter.stream`: these tests feed it the
fixture streams (as SDK objects and as decoded SSE JSON) and check the
increments it asks for and the usage it settles on.
"""

from __future__ import annotations

from typing import Any

import pytest

from knai.metering import Price, Usage, usage_of
from knai.metering._tally import StreamTally
from tests.metering import _fixtures as fx

FORMS = ["sdk", "json"]


def chunks(name: str, form: str) -> list[Any]:
    return fx.STREAMS[name](name) if form == "sdk" else fx.raw(name)


def run(stream: list[Any], price: Price, step: int) -> tuple[StreamTally, list[int]]:
    tally = StreamTally(price, step)
    increments = [amount for amount in map(tally.feed, stream) if amount]
    return tally, increments


# (stream, non-empty deltas, reported usage or None)
STREAM_CASES = [
    ("chat_stream_usage", 12, Usage(128, 1920, 0, 12, 0)),
    ("chat_stream_no_usage", 12, None),
    ("chat_stream_tool_reasoning", 6, Usage(80, 0, 0, 210, 192)),
    ("response_stream", 7, Usage(176, 1152, 0, 372, 320)),
    ("anthropic_stream", 9, Usage(21, 1800, 188, 40, 0)),
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    ("name", "deltas", "report"), STREAM_CASES, ids=[c[0] for c in STREAM_CASES]
)
def test_each_stream_counts_its_deltas_and_settles_on_its_report(
    name: str, deltas: int, report: Usage | None, form: str
) -> None:
    tally, _ = run(chunks(name, form), Price(1, 1), 10**9)
    assert tally.deltas == deltas
    assert tally.exact is (report is not None)
    assert tally.usage == (report if report is not None else tally.bound)
    if report is None:
        assert tally.usage.output_tokens == deltas


@pytest.mark.parametrize("form", FORMS)
def test_chat_increments_are_lower_bounds_of_step_or_more(form: str) -> None:
    """12 one-token deltas at 2 wallet tokens each, step 5: due at 6, 12, 18, 24."""
    tally, increments = run(chunks("chat_stream_usage", form), Price(1, 2), 5)
    assert increments == [6, 6, 6, 6]
    # The report: 128 + 1920 input at 1, 12 output at 2 = 2072; the rest is settled.
    assert tally.total() == 2072
    assert tally.rest() == 2072 - 24


@pytest.mark.parametrize("form", FORMS)
def test_anthropic_input_counts_as_soon_as_message_start_says_it(form: str) -> None:
    """message_start's input is exact, so the first increment falls due on it."""
    tally, increments = run(chunks("anthropic_stream", form), Price(1, 1), 1000)
    # 21 + 1800 + 188 input and 1 output at message_start, then 9 deltas lift output to 9.
    assert increments == [2010]
    assert tally.total() == 21 + 1800 + 188 + 40
    assert tally.rest() == 40 - 1


def test_anthropic_cumulative_output_replaces_and_is_never_added() -> None:
    stream = [
        *fx.raw("anthropic_stream")[:-2],
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 30}},
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 40}},
    ]
    tally, _ = run(stream, Price(1, 1), 10**9)
    assert tally.usage == Usage(21, 1800, 188, 40)


def test_anthropic_message_delta_input_counts_replace_message_start() -> None:
    stream = [
        *fx.raw("anthropic_stream")[:-2],
        {
            "type": "message_delta",
            "delta": {},
            "usage": {
                "input_tokens": 25,
                "cache_read_input_tokens": 1800,
                "cache_creation_input_tokens": 0,
                "output_tokens": 40,
            },
        },
    ]
    tally, _ = run(stream, Price(1, 1), 10**9)
    assert tally.usage == Usage(25, 1800, 0, 40)


@pytest.mark.parametrize("name", list(fx.STREAMS))
def test_sdk_objects_and_their_json_give_the_same_increments(name: str) -> None:
    """Increments are a function of the chunks' content, whatever their form."""
    price = Price("0.5", 3, cached_input="0.1", cache_write="0.7")
    sdk_tally, sdk = run(chunks(name, "sdk"), price, 3)
    json_tally, raw = run(chunks(name, "json"), price, 3)
    assert sdk == raw
    assert (sdk_tally.total(), sdk_tally.rest()) == (json_tally.total(), json_tally.rest())
    assert sdk_tally.increments == len(sdk)


@pytest.mark.parametrize("name", list(fx.STREAMS))
def test_a_replay_of_the_same_chunks_asks_for_the_same_increments(name: str) -> None:
    first = run(chunks(name, "sdk"), Price(1, 1), 2)[1]
    again = run(chunks(name, "sdk"), Price(1, 1), 2)[1]
    assert first == again


def test_chunks_of_no_known_shape_count_nothing() -> None:
    tally, increments = run(["text", {"type": "ping"}, {"type": "error"}, 42, None], Price(1, 1), 1)
    assert increments == []
    assert tally.usage == Usage()
    assert not tally.exact


def test_a_chunk_with_several_choices_counts_each_non_empty_delta() -> None:
    chunk = {
        "choices": [
            {"delta": {"content": "a"}},
            {"delta": {"content": ""}},
            {"delta": {"refusal": "no"}},
        ]
    }
    tally, _ = run([chunk], Price(1, 1), 10**9)
    assert tally.deltas == 2


def test_the_reported_usage_of_the_final_chunk_matches_usage_of() -> None:
    stream = fx.chat_chunks("chat_stream_usage")
    tally, _ = run(stream, Price(1, 1), 10**9)
    assert tally.usage == usage_of(stream[-1])


def test_plain_objects_of_the_chat_shape_are_read_even_with_fields_missing() -> None:
    """LiteLLM-style objects: attributes, some absent or None, read like the SDK's."""
    from types import SimpleNamespace as Obj

    stream = [
        Obj(choices=[Obj(delta=Obj(content="Hi"))], usage=None),
        Obj(choices=[Obj(delta=Obj(tool_calls=[{"index": 0}]))]),
        Obj(type="content_block_delta", delta=Obj(type="text_delta", text="!")),
        Obj(choices=None, usage=Obj(prompt_tokens=7, completion_tokens=3)),
    ]
    tally, _ = run(stream, Price(1, 1), 10**9)
    assert tally.deltas == 3
    assert tally.usage == Usage(7, 0, 0, 3)
    # And the other way round: a class first seen as an event, then as a chunk.
    tally, _ = run([stream[2], stream[0], stream[3]], Price(1, 1), 10**9)
    assert tally.deltas == 2
    assert tally.usage == Usage(7, 0, 0, 3)


def test_the_chunk_events_of_openais_stream_helper_count_once() -> None:
    """`client.chat.completions.stream()` yields "chunk" events and "content.delta" repeats."""
    events: list[Any] = []
    for chunk in fx.raw("chat_stream_usage"):
        events.append({"type": "chunk", "chunk": chunk, "snapshot": {}})
        content = (chunk["choices"] or [{}])[0].get("delta", {}).get("content")
        if content:
            events.append({"type": "content.delta", "delta": content, "snapshot": content})
    tally, _ = run(events, Price(1, 1), 10**9)
    assert tally.deltas == 12
    assert tally.usage == Usage(128, 1920, 0, 12)
