"""Golden tests for clawback.pricing: every expected figure is computed by hand in the comments.

Rates are USD per million tokens, so a category costs tokens x rate / 1,000,000.
"""

from __future__ import annotations

import logging
import typing
from decimal import Decimal
from pathlib import Path

import pytest
from anthropic.types.model import Model
from typer.testing import CliRunner

from clawback.api.usage import Usage
from clawback.config import PricingSettings
from clawback.pricing import (
    Cost,
    PriceBook,
    PriceTableError,
    load_price_book,
    user_price_file,
)

D = Decimal
BUNDLED_TEXT = (Path(__file__).parents[2] / "src" / "clawback" / "data" / "prices.yaml").read_text()


@pytest.fixture
def book() -> PriceBook:
    return PriceBook.bundled()


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typing.Iterator[None]:
    # Never read or write the developer's own ~/.config/clawback/prices.yaml.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    yield


# input 1,000 · 5m write 3,000 · 1h write 4,000 · cache read 2,000 · output 500; prompt = 10,000 (no tier)
MIXED = Usage(
    input_tokens=1_000,
    output_tokens=500,
    cache_read_input_tokens=2_000,
    cache_write_5m_input_tokens=3_000,
    cache_write_1h_input_tokens=4_000,
)


# (model, input, 5m write, 1h write, cache read, output, total) for MIXED
GOLDEN = [
    # fable-5-2 $8 / $10 / $16 / $0.20 / $40: 1000x8=.008, 3000x10=.03, 4000x16=.064, 2000x.2=.0004, 500x40=.02
    ("claude-fable-5-2", "0.008", "0.03", "0.064", "0.0004", "0.02", "0.1224"),
    # fable-5-1 $10 / $12.50 / $20 / $0.25 (0.025x) / $50: .01, .0375, .08, .0005, .025 -> .153
    ("claude-fable-5-1", "0.01", "0.0375", "0.08", "0.0005", "0.025", "0.153"),
    ("claude-mythos-5-1", "0.01", "0.0375", "0.08", "0.0005", "0.025", "0.153"),
    # fable-5 cache read $1 (0.1x): 2000x1 = .002 -> .01+.0375+.08+.002+.025 = .1545
    ("claude-fable-5", "0.01", "0.0375", "0.08", "0.002", "0.025", "0.1545"),
    ("claude-mythos-5", "0.01", "0.0375", "0.08", "0.002", "0.025", "0.1545"),
    # mythos-preview $25 / $31.25 / $50 / $2.50 / $125: .025, .09375, .2, .005, .0625 -> .38625
    ("claude-mythos-preview", "0.025", "0.09375", "0.2", "0.005", "0.0625", "0.38625"),
    # opus-5-5 $4 / $5 / $8 / $0.20 (0.05x) / $20: .004, .015, .032, .0004, .01 -> .0614
    ("claude-opus-5-5", "0.004", "0.015", "0.032", "0.0004", "0.01", "0.0614"),
    # opus-5 / 4-8 $5 / $6.25 / $10 / $0.50 / $25: .005, .01875, .04, .001, .0125 -> .07725
    ("claude-opus-5", "0.005", "0.01875", "0.04", "0.001", "0.0125", "0.07725"),
    ("claude-opus-4-8", "0.005", "0.01875", "0.04", "0.001", "0.0125", "0.07725"),
    ("claude-opus-4-5", "0.005", "0.01875", "0.04", "0.001", "0.0125", "0.07725"),
    # opus-4-1 $15 / $18.75 / $30 / $1.50 / $75: .015, .05625, .12, .003, .0375 -> .23175
    ("claude-opus-4-1", "0.015", "0.05625", "0.12", "0.003", "0.0375", "0.23175"),
    # sonnet-5-5 $2 / $2.50 / $4 / $0.10 (0.05x) / $10: .002, .0075, .016, .0002, .005 -> .0307
    ("claude-sonnet-5-5", "0.002", "0.0075", "0.016", "0.0002", "0.005", "0.0307"),
    # sonnet-5 cache read $0.20: 2000x.2 = .0004 -> .0309
    ("claude-sonnet-5", "0.002", "0.0075", "0.016", "0.0004", "0.005", "0.0309"),
    # sonnet-4-5 $3 / $3.75 / $6 / $0.30 / $15: .003, .01125, .024, .0006, .0075 -> .04635
    ("claude-sonnet-4-5", "0.003", "0.01125", "0.024", "0.0006", "0.0075", "0.04635"),
    ("claude-sonnet-4-6", "0.003", "0.01125", "0.024", "0.0006", "0.0075", "0.04635"),
    # haiku-5-5 (prompt 10k <= 100k) $0.10 / $0.125 / $0.20 / $0.01 / $0.50:
    # .0001, .000375, .0008, .00002, .00025 -> .001545
    ("claude-haiku-5-5", "0.0001", "0.000375", "0.0008", "0.00002", "0.00025", "0.001545"),
    # haiku-4-5 $1 / $1.25 / $2 / $0.10 / $5: .001, .00375, .008, .0002, .0025 -> .01545
    ("claude-haiku-4-5", "0.001", "0.00375", "0.008", "0.0002", "0.0025", "0.01545"),
]


@pytest.mark.parametrize(("model", "inp", "w5m", "w1h", "read", "out", "total"), GOLDEN)
def test_golden_cost_per_family(
    book: PriceBook, model: str, inp: str, w5m: str, w1h: str, read: str, out: str, total: str
) -> None:
    cost = book.cost(model, MIXED)
    assert (cost.input, cost.cache_write_5m, cost.cache_write_1h, cost.cache_read, cost.output) == (
        D(inp),
        D(w5m),
        D(w1h),
        D(read),
        D(out),
    )
    assert cost.total == D(total)


def test_golden_covers_every_family(book: PriceBook) -> None:
    families = {book.get(row[0]).family for row in GOLDEN}
    assert families == {price.family for price in book.models()}


@pytest.mark.parametrize(
    ("model", "tokens", "expected"),
    [
        ("claude-opus-5-5", 1_000_000, "0.20"),  # 0.05 x $4 per MTok
        ("claude-sonnet-5-5", 1_000_000, "0.10"),  # 0.05 x $2
        ("claude-fable-5-1", 1_000_000, "0.25"),  # 0.025 x $10
        ("claude-fable-5", 1_000_000, "1.00"),  # 0.1 x $10
        ("claude-opus-4-8", 1_000_000, "0.50"),  # 0.1 x $5
        ("claude-haiku-4-5", 1_000_000, "0.10"),  # 0.1 x $1
        # Haiku 5.5: 1M tokens would cross its 100k tier, so 100,000 x $0.01 (0.1 x $0.10) = .001
        ("claude-haiku-5-5", 100_000, "0.001"),
    ],
)
def test_cache_reads_at_each_models_own_rate(book: PriceBook, model: str, tokens: int, expected: str) -> None:
    cost = book.cost(model, Usage(cache_read_input_tokens=tokens))
    assert cost.total == cost.cache_read == D(expected)


def test_5m_and_1h_cache_writes_are_priced_apart(book: PriceBook) -> None:
    # Opus 4.8: 1M 5-minute writes at $6.25, 1M 1-hour writes at $10
    cost = book.cost(
        "claude-opus-4-8", Usage(cache_write_5m_input_tokens=1_000_000, cache_write_1h_input_tokens=1_000_000)
    )
    assert cost.cache_write_5m == D("6.25")
    assert cost.cache_write_1h == D("10")
    assert cost.input == cost.cache_read == cost.output == 0
    assert cost.total == D("16.25")


def test_batch_halves_every_category(book: PriceBook) -> None:
    # Opus 5.5 MIXED: .004/.015/.032/.0004/.01 (total .0614) halved -> .002/.0075/.016/.0002/.005 = .0307
    cost = book.cost("claude-opus-5-5", MIXED, batch=True)
    assert (cost.input, cost.cache_write_5m, cost.cache_write_1h, cost.cache_read, cost.output) == (
        D("0.002"),
        D("0.0075"),
        D("0.016"),
        D("0.0002"),
        D("0.005"),
    )
    assert cost.total == D("0.0307")


def test_haiku_5_5_large_prompt_tier_boundary(book: PriceBook) -> None:
    # prompt = 90,000 input + 10,000 cache read = 100,000 (not above 100k): low tier
    # 90,000 x $0.10 = .009; 10,000 x $0.01 = .0001; 1,000 out x $0.50 = .0005 -> .0096
    below = book.cost(
        "claude-haiku-5-5", Usage(input_tokens=90_000, cache_read_input_tokens=10_000, output_tokens=1_000)
    )
    assert below.total == D("0.0096")
    # prompt = 100,001: the WHOLE request, output too, moves to $0.50 / $0.05 read / $2.50 out
    # 90,001 x $0.50 = .0450005; 10,000 x $0.05 = .0005; 1,000 x $2.50 = .0025 -> .0480005
    above = book.cost(
        "claude-haiku-5-5", Usage(input_tokens=90_001, cache_read_input_tokens=10_000, output_tokens=1_000)
    )
    assert (above.input, above.cache_read, above.output) == (D("0.0450005"), D("0.0005"), D("0.0025"))
    assert above.total == D("0.0480005")


def test_haiku_5_5_tier_counts_cache_writes_in_the_prompt(book: PriceBook) -> None:
    # 50,000 input + 30,000 5m writes + 20,001 1h writes = 100,001 -> high tier
    # 50,000 x $0.50 = .025; 30,000 x $0.625 = .01875; 20,001 x $1.00 = .020001 -> .063751
    usage = Usage(input_tokens=50_000, cache_write_5m_input_tokens=30_000, cache_write_1h_input_tokens=20_001)
    cost = book.cost("claude-haiku-5-5", usage)
    assert (cost.input, cost.cache_write_5m, cost.cache_write_1h) == (D("0.025"), D("0.01875"), D("0.020001"))
    assert cost.total == D("0.063751")


def test_sonnet_4_5_long_context_tier(book: PriceBook) -> None:
    # prompt = 150,000 input + 50,001 cache read = 200,001 > 200k with the 1M beta: everything at the tier
    # 150,000 x $6 = .9; 50,001 x $0.60 = .0300006; 2,000 out x $22.50 = .045 -> .9750006
    usage = Usage(input_tokens=150_000, cache_read_input_tokens=50_001, output_tokens=2_000)
    cost = book.cost("claude-sonnet-4-5-20250929[1m]", usage, long_context=True)
    assert (cost.input, cost.cache_read, cost.output) == (D("0.9"), D("0.0300006"), D("0.045"))
    assert cost.total == D("0.9750006")
    # the API cannot serve 200,001 prompt tokens on Sonnet 4.5 without the beta, so the usage proves it
    assert book.cost("claude-sonnet-4-5", usage).total == D("0.9750006")
    # exactly 200,000 stays standard even with the beta: 150,000 x $3 = .45; 50,000 x $0.30 = .015;
    # 2,000 x $15 = .03 -> .495
    at_threshold = Usage(input_tokens=150_000, cache_read_input_tokens=50_000, output_tokens=2_000)
    assert book.cost("claude-sonnet-4-5", at_threshold, long_context=True).total == D("0.495")
    # a 5m write in the tier: 1,000 x $7.50 = .0075
    writes = Usage(input_tokens=200_000, cache_write_5m_input_tokens=1_000)
    assert book.cost("claude-sonnet-4-5", writes, long_context=True).cache_write_5m == D("0.0075")


def test_sonnet_4_6_has_1m_context_at_standard_prices(book: PriceBook) -> None:
    # 500,000 x $3 = 1.5 (no long-context tier on 4.6 and later)
    assert book.cost("claude-sonnet-4-6[1m]", Usage(input_tokens=500_000), long_context=True).total == D("1.5")


def test_us_inference_geo_multiplier_and_stacking(book: PriceBook) -> None:
    # Opus 5.5 MIXED x 1.1: .0044 + .0165 + .0352 + .00044 + .011 = .06754
    cost = book.cost("claude-opus-5-5", MIXED, inference_geo="us")
    assert (cost.input, cost.cache_write_5m, cost.cache_write_1h, cost.cache_read, cost.output) == (
        D("0.0044"),
        D("0.0165"),
        D("0.0352"),
        D("0.00044"),
        D("0.011"),
    )
    assert cost.total == D("0.06754")
    # batch and geo stack: .0614 x 0.5 x 1.1 = .03377
    assert book.cost("claude-opus-5-5", MIXED, batch=True, inference_geo="us").total == D("0.03377")
    # "global" is the default: no premium
    assert book.cost("claude-opus-5-5", MIXED, inference_geo="global").total == D("0.0614")


def test_us_geo_premium_only_on_4_6_and_later(book: PriceBook, caplog: pytest.LogCaptureFixture) -> None:
    # Haiku 4.5 predates 4.6: MIXED stays .01545 and a warning says why
    with caplog.at_level(logging.WARNING, logger="clawback.pricing"):
        assert book.cost("claude-haiku-4-5", MIXED, inference_geo="us").total == D("0.01545")
    assert "4.6 and later" in caplog.text


def test_fast_mode_uses_the_models_fast_rates(book: PriceBook, caplog: pytest.LogCaptureFixture) -> None:
    # Opus 5.5 fast $8 / $10 / $16 / $0.40 / $40: .008 + .03 + .064 + .0008 + .02 = .1228
    assert book.cost("claude-opus-5-5", MIXED, speed="fast").total == D("0.1228")
    # fast x batch x geo stack: .1228 x 0.5 x 1.1 = .06754
    assert book.cost("claude-opus-5-5", MIXED, speed="fast", batch=True, inference_geo="us").total == D("0.06754")
    # no fast prices for Sonnet 5.5: standard .0307 and a warning
    with caplog.at_level(logging.WARNING, logger="clawback.pricing"):
        assert book.cost("claude-sonnet-5-5", MIXED, speed="fast").total == D("0.0307")
    assert "no fast-mode prices" in caplog.text


def test_unknown_model_falls_back_never_zero(book: PriceBook, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="clawback.pricing"):
        cost = book.cost("claude-nonexistent-9", MIXED)
        book.cost("claude-nonexistent-9", MIXED)
    # priced as the fallback, claude-opus-4-1: .23175 (see GOLDEN)
    assert cost.total == D("0.23175")
    assert not book.is_known("claude-nonexistent-9")
    assert book.get("claude-nonexistent-9").model == "claude-opus-4-1"
    warnings = [r for r in caplog.records if r.name == "clawback.pricing" and "claude-nonexistent-9" in r.getMessage()]
    assert len(warnings) == 1  # once per id, not once per request
    assert warnings[0].levelno == logging.WARNING


def test_fallback_model_is_configurable() -> None:
    book = PriceBook.bundled(fallback_model="claude-sonnet-5-5")
    assert book.get("gpt-something").model == "claude-sonnet-5-5"
    with pytest.raises(PriceTableError, match="fallback model 'claude-nope'"):
        PriceBook.bundled(fallback_model="claude-nope")


@pytest.mark.parametrize(
    ("given", "row"),
    [
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-opus-5-5[1m]", "claude-opus-5-5"),
        ("claude-sonnet-5[1m]", "claude-sonnet-5"),
        ("claude-haiku-5-5", "claude-haiku-5-5"),
        ("Claude-Sonnet-5-5[1M]", "claude-sonnet-5-5"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-opus-5-5-20261001", "claude-opus-5-5"),  # a future dated id of a known model
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),  # Vertex form
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),  # Bedrock form
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ],
)
def test_alias_and_dated_id_resolution(book: PriceBook, given: str, row: str) -> None:
    assert book.is_known(given)
    assert book.get(given).model == row


def test_every_sdk_model_id_has_a_row(book: PriceBook) -> None:
    literal = next(arg for arg in typing.get_args(Model) if typing.get_origin(arg) is typing.Literal)
    ids = typing.get_args(literal)
    assert len(ids) >= 20
    missing = [model for model in ids if not book.is_known(model)]
    assert missing == []


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("claude-opus-5-5", 512),
        ("claude-haiku-5-5", 512),
        ("claude-opus-4-8", 1024),
        ("claude-opus-4-7", 2048),
        ("claude-opus-4-6", 4096),
        ("claude-opus-4-5", 4096),
        ("claude-sonnet-4-6", 1024),
        ("claude-haiku-4-5", 4096),
    ],
)
def test_min_cacheable_tokens_per_model(book: PriceBook, model: str, minimum: int) -> None:
    assert book.get(model).min_cacheable_tokens == minimum


def test_streamed_usage_is_counted_once(book: PriceBook) -> None:
    start = Usage.from_api(
        {
            "input_tokens": 2_000,
            "cache_read_input_tokens": 10_000,
            "cache_creation_input_tokens": 500,
            "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 1,
        }
    )
    final = start.updated({"output_tokens": 300}).updated({"output_tokens": 800})
    cost = book.cost("claude-sonnet-5-5", final)
    # cumulative finals: 2,000 x $2 = .004; 10,000 x $0.10 = .001; 500 x $2.50 = .00125; 800 x $10 = .008
    assert (cost.input, cost.cache_read, cost.cache_write_5m, cost.output) == (
        D("0.004"),
        D("0.001"),
        D("0.00125"),
        D("0.008"),
    )
    assert cost.total == D("0.01425")
    # adding the events' outputs (1 + 300 + 800) would have given 1,101 x $10 = .01101 of output
    assert cost.output != D("0.01101")


def test_cost_is_decimal_and_rounds_half_even() -> None:
    assert Cost(input=D("0.0000005")).micro_usd == 0  # 0.5 micro-dollars -> 0 (even)
    assert Cost(input=D("0.0000015")).micro_usd == 2  # 1.5 -> 2 (even)
    assert Cost(input=D("0.0000025")).micro_usd == 2  # 2.5 -> 2 (even)
    total = Cost(input=D("0.004"), output=D("0.01")) + Cost(cache_read=D("0.0004"), cache_write_5m=D("0.015"))
    assert total == Cost(input=D("0.004"), cache_write_5m=D("0.015"), cache_read=D("0.0004"), output=D("0.01"))
    assert total.micro_usd == 29_400  # .0294 USD


def test_prices_are_exact_decimals(book: PriceBook) -> None:
    price = book.get("claude-haiku-5-5")
    assert price.input == D("0.1")  # from YAML "0.10" without a binary float on the way
    for row in book.models():
        for value in (row.input, row.output, row.cache_write_5m, row.cache_write_1h, row.cache_read):
            assert isinstance(value, Decimal)
    cost = book.cost("claude-opus-5-5", MIXED)
    assert all(isinstance(getattr(cost, f), Decimal) for f in ("input", "cache_read", "output", "total"))


def _table_with(row_patch: str, tmp_path: Path) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "schema_version: 1\nas_of: '2026-12-01'\nmodels:\n"
        "  - model: claude-opus-4-1\n    family: opus\n    input: 15\n    output: 75\n"
        "    cache_write_5m: 18.75\n    cache_write_1h: 30\n    cache_read: 1.50\n"
        "    min_cacheable_tokens: 1024\n    context_window: 200000\n    source: test\n    as_of: '2026-12-01'\n"
        + row_patch
    )
    return path


BAD_ROW = (
    "  - model: claude-x\n    family: opus\n    input: {input}\n    output: 75\n"
    "    cache_write_5m: 18.75\n    cache_write_1h: 30\n{read}"
    "    min_cacheable_tokens: 1024\n    context_window: 200000\n    source: test\n    as_of: '2026-12-01'\n"
)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (BAD_ROW.format(input="abc", read="    cache_read: 1.5\n"), "'input'"),
        (BAD_ROW.format(input="-1", read="    cache_read: 1.5\n"), "'input'"),
        (BAD_ROW.format(input="15", read=""), "'cache_read': missing"),
        (BAD_ROW.format(input="15", read="    cache_reed: 1.5\n"), "'cache_reed'"),
    ],
)
def test_bad_row_names_model_and_field(tmp_path: Path, patch: str, field: str) -> None:
    with pytest.raises(PriceTableError) as info:
        PriceBook.from_file(_table_with(patch, tmp_path))
    assert "model 'claude-x'" in str(info.value)
    assert field in str(info.value)


def test_duplicate_alias_is_rejected(tmp_path: Path) -> None:
    patch = BAD_ROW.format(input="15", read="    cache_read: 1.5\n").replace(
        "    family: opus\n", "    family: opus\n    aliases: [claude-opus-4-1]\n"
    )
    with pytest.raises(PriceTableError, match="already used by model 'claude-opus-4-1'"):
        PriceBook.from_file(_table_with(patch, tmp_path))


def test_from_file_and_load_price_book_honour_settings(tmp_path: Path) -> None:
    assert load_price_book(None).as_of == PriceBook.bundled().as_of
    custom = _table_with("", tmp_path)
    book = load_price_book(PricingSettings(data_file=str(custom), fallback_model="claude-opus-4-1"))
    assert book.as_of == "2026-12-01"
    assert [m.model for m in book.models()] == ["claude-opus-4-1"]
    with pytest.raises(PriceTableError, match="cannot read"):
        PriceBook.from_file(tmp_path / "missing.yaml")


def test_bundled_table_round_trips_through_from_file(tmp_path: Path, book: PriceBook) -> None:
    copy = tmp_path / "copy.yaml"
    copy.write_text(BUNDLED_TEXT)
    assert PriceBook.from_file(copy).models() == book.models()


def test_cli_pricing_list() -> None:
    from clawback.cli import app

    result = CliRunner().invoke(app, ["pricing", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "as of 2026-11-15" in result.output
    for model in ("claude-opus-5-5", "claude-haiku-5-5", "claude-sonnet-4-5", "claude-mythos-preview"):
        assert model in result.output
    assert "$0.125" in result.output  # Haiku 5.5 5m write, shown unrounded
    assert "4,096" in result.output  # a minimum cacheable length


def test_cli_pricing_update_installs_and_rejects(tmp_path: Path) -> None:
    from clawback.cli import app

    runner = CliRunner()
    good = _table_with("", tmp_path)
    result = runner.invoke(app, ["pricing", "update", str(good)], env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert result.exit_code == 0, result.output
    assert user_price_file().read_text() == good.read_text()
    assert str(user_price_file()) in result.output.replace("\n", "")
    # the installed table is now the one in force
    assert load_price_book(None).as_of == "2026-12-01"

    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("cache_read: 1.50", "cache_read: lots"))
    result = runner.invoke(app, ["pricing", "update", str(bad)], env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert result.exit_code == 2
    assert "claude-opus-4-1" in result.output and "cache_read" in result.output
    assert user_price_file().read_text() == good.read_text()  # nothing installed
