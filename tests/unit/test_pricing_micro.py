"""``PriceBook.micro_usd`` (the ledger's per-request figure, integer arithmetic) equals ``cost(...).micro_usd``
(the ``Decimal`` path) for every model of the bundled table, every usage, with and without multipliers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clawback.api.usage import Usage
from clawback.pricing import PriceBook

BOOK = PriceBook.bundled()
MODELS = [price.model for price in BOOK.models()]
tokens = st.integers(min_value=0, max_value=3_000_000)


@settings(max_examples=400, deadline=None)
@given(
    model=st.sampled_from([*MODELS, "claude-unknown-9", "claude-sonnet-4-5-20250929"]),
    usage=st.builds(
        Usage,
        input_tokens=tokens,
        output_tokens=tokens,
        cache_read_input_tokens=tokens,
        cache_write_5m_input_tokens=tokens,
        cache_write_1h_input_tokens=tokens,
    ),
    batch=st.booleans(),
    geo=st.sampled_from([None, "global", "us", "US", "eu"]),
    speed=st.sampled_from([None, "standard", "fast"]),
    long_context=st.booleans(),
)
def test_micro_usd_is_the_decimal_figure(
    model: str, usage: Usage, batch: bool, geo: str | None, speed: str | None, long_context: bool
) -> None:
    expected = BOOK.cost(model, usage, batch=batch, inference_geo=geo, speed=speed, long_context=long_context)
    got = BOOK.micro_usd(model, usage, batch=batch, inference_geo=geo, speed=speed, long_context=long_context)
    assert got == expected.micro_usd


def test_half_cent_rounding_matches() -> None:
    # 1 token at $0.30 / MTok is 0.3 micro-dollars: rounds to 0; 5 tokens at $0.30 = 1.5 -> 2 (half to even)
    for n in range(0, 40):
        usage = Usage(cache_read_input_tokens=n)
        model = "claude-sonnet-4-5-20250929"
        assert BOOK.micro_usd(model, usage) == BOOK.cost(model, usage).micro_usd
    assert MODELS, "the bundled price table lists models"
