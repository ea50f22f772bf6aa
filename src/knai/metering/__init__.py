"""Charge LLM usage: usage readers, price tables, and streams charged as they flow.

Loaded only when imported (`import knai` does not load it); it imports no LLM
SDK: OpenAI and Anthropic objects, and their decoded JSON, are read by shape.

    from knai.metering import Meter, Price, PriceTable

    meter = Meter(provider, PriceTable({"gpt-4o*": Price("2.5", 10, cached_input="1.25")}))
    meter.charge(session_token, completion)           # one response

    with meter.stream(session_token, model="gpt-4o", key=request_id) as metered:
        for chunk in metered.wrap(upstream):          # charged as it flows
            ...

Prices are in wallet tokens per model token. A price file (`PriceTable.from_file`)
is a TOML or JSON table of model id or `prefix*` pattern to `input`, `output`
and optional `cached_input` and `cache_write` rates.
"""

from ._async_meter import AsyncMeter, AsyncMeteredStream
from ._meter import Meter, MeteredStream
from ._prices import Price, PriceTable, Rate
from ._readers import usage_of
from ._stream import UnsettledCharge
from ._usage import Usage

__all__ = [
    "AsyncMeter",
    "AsyncMeteredStream",
    "Meter",
    "MeteredStream",
    "Price",
    "PriceTable",
    "Rate",
    "UnsettledCharge",
    "Usage",
    "usage_of",
]
