"""knai.metering as a user writes it (the README's examples), checked by `mypy --strict`, never run.

Every result carries an `assert_type`; lines marked `# type: ignore[...]` must
be type errors.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction

import anthropic
import anthropic.types
import openai
import openai.types.chat

from knai import AsyncKNAIProvider, ChargeResult, KNAIError, KNAIProvider
from knai.metering import (
    AsyncMeter,
    AsyncMeteredStream,
    Meter,
    MeteredStream,
    Price,
    PriceTable,
    UnsettledCharge,
    Usage,
    usage_of,
)
from knai.outbox import AsyncOutbox, Outbox, OutboxEntry

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

prices = PriceTable(
    {
        "gpt-4o*": Price("2.5", 10, cached_input="1.25"),
        "claude-sonnet-4*": Price(3, 15, cached_input="0.3", cache_write="3.75"),
    }
)  # or PriceTable.from_file("prices.toml"), so operators change prices without code


def answer(provider: KNAIProvider, token: str, question: str, request_id: str) -> None:
    llm = openai.OpenAI()
    meter = Meter(provider, prices)

    # One response: its usage, priced under the model it names.
    completion = llm.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": question}]
    )
    result: ChargeResult | None = meter.charge(token, completion, idempotency_key=request_id)

    # A stream, charged in increments of at least `step` wallet tokens as it flows.
    stream = llm.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},  # else only a lower bound is charged
    )
    with meter.stream(token, model="gpt-4o", key=f"{request_id}-s", step=500) as metered:
        for chunk in metered.wrap(stream):
            assert_type(chunk, openai.types.chat.ChatCompletionChunk)
            for choice in chunk.choices:
                print(choice.delta.content or "", end="")
    if metered.stopped is not None:
        print("\n[the wallet refused more:", metered.stopped.message, "]")
    print(result, metered.charged, metered.usage, metered.exact)


async def answer_async(
    provider: AsyncKNAIProvider, token: str, question: str, request_id: str
) -> str:
    llm = anthropic.AsyncAnthropic()
    meter = AsyncMeter(provider, PriceTable.from_file("prices.toml"))
    model = "claude-sonnet-4-20250514"

    message = await llm.messages.create(
        model=model, max_tokens=1024, messages=[{"role": "user", "content": question}]
    )
    await meter.charge(token, message, idempotency_key=request_id)

    stream = await llm.messages.create(
        model=model, max_tokens=1024, messages=[{"role": "user", "content": question}], stream=True
    )
    text: list[str] = []
    async with meter.stream(token, model=model, key=f"{request_id}-s") as metered:
        async for event in metered.wrap(stream):
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text.append(event.delta.text)
    return "".join(text) if metered.stopped is None else "[balance ran out]"


def the_types(
    provider: KNAIProvider, aprovider: AsyncKNAIProvider, message: anthropic.types.Message
) -> None:
    usage = usage_of(message)
    assert_type(usage, Usage)
    assert_type(usage + Usage(output_tokens=1), Usage)
    price = Price(Decimal("0.1"), Fraction(1, 3), cached_input=0.05, cache_write="0.2")
    assert_type(price.amount(usage), int)
    assert_type(prices.amount("gpt-4o", usage), int)
    assert_type(prices.price("gpt-4o"), Price)
    meter = Meter(provider)
    assert_type(meter.charge("tok", message), ChargeResult | None)
    metered = meter.stream("tok", model="m", key="k")
    assert_type(metered, MeteredStream)
    assert_type(metered.stopped, KNAIError | None)
    assert_type(metered.unsettled, list[UnsettledCharge])
    assert_type(metered.charged, int)
    assert_type(metered.exact, bool)
    assert_type(metered.wrap([1, 2]), Iterator[int])
    assert_type(AsyncMeter(aprovider).stream("tok", model="m", key="k"), AsyncMeteredStream)
    Meter(aprovider)  # type: ignore[call-overload]
    AsyncMeter(provider)  # type: ignore[call-overload]
    Price(1)  # type: ignore[call-arg]
    meter.stream("tok", model="m")  # type: ignore[call-arg]


async def through_an_outbox(
    provider: KNAIProvider,
    aprovider: AsyncKNAIProvider,
    outbox: Outbox,
    aoutbox: AsyncOutbox,
    message: anthropic.types.Message,
) -> None:
    """A meter over an outbox returns the stored entry; a bare annotation means inline."""
    meter = Meter(provider, outbox=outbox)
    assert_type(meter, Meter[OutboxEntry])
    assert_type(meter.charge("tok", message), OutboxEntry | None)
    ameter = AsyncMeter(aprovider, outbox=aoutbox)
    assert_type(await ameter.charge("tok", message), OutboxEntry | None)
    inline: Meter = Meter(provider)
    assert_type(inline.charge("tok", message), ChargeResult | None)
    Meter(provider, outbox=aoutbox)  # type: ignore[call-overload]
    AsyncMeter(aprovider, outbox=outbox)  # type: ignore[call-overload]
