"""Models and prices: the ONE place a token count becomes money.

Every cost in the product (ledger, budgets, dashboard, reports, the simulator's bill) comes from
``PriceBook.cost``, so that a saving reported by one part is the same figure another part charged.

Why it is shaped like this:

* Prices are data (``clawback/data/prices.yaml``), one row per model with its own cache rates. Cache reads
  are 0.1x input on most models but 0.05x or 0.025x on some current ones; a global multiplier would be
  silently wrong the day a new model ships, a table row is visibly wrong and easy to fix.
* Money is ``Decimal``, read from YAML without ever passing through a binary float: a ledger that sums a
  million rows must not drift by fractions of a cent.
* An unknown model is priced as a configurable fallback (an expensive one) with a warning, never at $0:
  peers that priced unknown models at $0 under-reported spend for weeks each time Anthropic shipped.
* Tiers reprice the whole request, not just the tokens above the threshold: Haiku 5.5 above 100k prompt
  tokens and Sonnet 4.5 / 4 above 200k (1M-context beta) bill every token (input, cache, output) at the
  higher rates. "Prompt" means input + cache reads + cache writes.
* Modifiers stack multiplicatively: Batch API 50 % off, US-only inference 1.1x (rows flagged
  ``us_residency``), fast mode replaces the rates with the row's ``fast`` rates where the table has them.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from clawback.api.usage import Usage
from clawback.config import PricingSettings

__all__ = [
    "DEFAULT_FALLBACK_MODEL",
    "Cost",
    "LongPromptTier",
    "ModelPrice",
    "PriceBook",
    "PriceTableError",
    "Rates",
    "from_micro_usd",
    "load_price_book",
    "to_micro_usd",
    "usd",
    "user_price_file",
]

logger = logging.getLogger("clawback.pricing")

MILLION = Decimal(1_000_000)
DEFAULT_FALLBACK_MODEL = PricingSettings().fallback_model
SCHEMA_VERSION = 1
_ZERO = Decimal(0)
_ONE = Decimal(1)
_MICRO = Decimal("0.000001")


def from_micro_usd(micro: int) -> Decimal:
    """Integer micro-dollars (the ledger's unit, ``Cost.micro_usd``) -> exact ``Decimal`` dollars."""
    return Decimal(micro).scaleb(-6)


def to_micro_usd(amount: Decimal) -> int:
    """Exact dollars (a cost, a budget's limit) -> integer micro-dollars, rounded half to even."""
    return int((amount / _MICRO).quantize(_ONE, rounding=ROUND_HALF_EVEN))


def usd(micro: int) -> float:
    """Integer micro-dollars as float dollars: for display, JSON and metrics only (sums stay in micro-dollars)."""
    return micro / 1e6


@functools.lru_cache(maxsize=256)
def _scaled_rates(rates: Rates) -> tuple[int, int, int, int, int] | None:
    """Rates in micro-dollars per million tokens, as integers; None when a rate has more than 6 decimals."""
    out = []
    for rate in (rates.input, rates.output, rates.cache_write_5m, rates.cache_write_1h, rates.cache_read):
        scaled = rate.scaleb(6)
        if scaled != scaled.to_integral_value():
            return None
        out.append(int(scaled))
    return out[0], out[1], out[2], out[3], out[4]


class PriceTableError(ValueError):
    """A price table that cannot be used; the message names the file, the model and the field."""


# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens for each billed category of one request."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal


@dataclass(frozen=True, slots=True)
class LongPromptTier:
    """Rates for the WHOLE request once its prompt (input + cache reads + cache writes) exceeds a threshold.

    ``requires_beta`` names the beta header that unlocks the tier (Sonnet 4.5's 1M context); ``None`` when the
    tier applies to every request (Haiku 5.5).
    """

    threshold_tokens: int
    rates: Rates
    requires_beta: str | None = None


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One row of the price table: standard rates, plus the tiers and modifiers that apply to this model."""

    model: str
    family: str
    aliases: tuple[str, ...]
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    min_cacheable_tokens: int
    context_window: int
    source: str
    as_of: str
    us_residency: bool = False
    fast: Rates | None = None
    long_prompt: LongPromptTier | None = None

    @property
    def rates(self) -> Rates:
        """The standard rates as one value."""
        return Rates(self.input, self.output, self.cache_write_5m, self.cache_write_1h, self.cache_read)

    @property
    def confirmed(self) -> bool:
        """False when the row's source says its figures are unconfirmed or third-party only."""
        return not self.source.lower().startswith(("unconfirmed", "3p"))


@dataclass(frozen=True, slots=True)
class Cost:
    """Exact USD cost of one request (or a sum of them), per billed category."""

    input: Decimal = _ZERO
    cache_write_5m: Decimal = _ZERO
    cache_write_1h: Decimal = _ZERO
    cache_read: Decimal = _ZERO
    output: Decimal = _ZERO

    @property
    def total(self) -> Decimal:
        return self.input + self.cache_write_5m + self.cache_write_1h + self.cache_read + self.output

    @property
    def micro_usd(self) -> int:
        """The total in integer micro-dollars, rounded half-even (for integer columns and counters)."""
        return to_micro_usd(self.total)

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(
            self.input + other.input,
            self.cache_write_5m + other.cache_write_5m,
            self.cache_write_1h + other.cache_write_1h,
            self.cache_read + other.cache_read,
            self.output + other.output,
        )


# --------------------------------------------------------------------------------------------- parsing

_RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_REQUIRED_FIELDS = (
    "model",
    "family",
    *_RATE_FIELDS,
    "min_cacheable_tokens",
    "context_window",
    "source",
    "as_of",
)
_OPTIONAL_FIELDS = ("aliases", "us_residency", "fast", "long_prompt")
_TOP_LEVEL_FIELDS = ("schema_version", "as_of", "currency", "unit", "modifiers", "models")


class _ExactLoader(yaml.SafeLoader):
    """A YAML loader that keeps numbers with a fraction as ``Decimal`` instead of binary floats."""


def _construct_exact_float(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        return Decimal(text.replace("_", ""))
    except InvalidOperation:
        return text  # validation reports it with the model and field


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _construct_exact_float)


class _RowError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field = field
        self.problem = problem


def _decimal(field: str, value: Any) -> Decimal:
    if isinstance(value, bool):
        raise _RowError(field, f"expected a non-negative number (USD per million tokens), got {value!r}")
    if isinstance(value, float):  # only from a caller's own dict; YAML files never produce floats here
        value = repr(value)
    try:
        number = Decimal(value) if isinstance(value, int | str | Decimal) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or number < 0:
        raise _RowError(field, f"expected a non-negative number (USD per million tokens), got {value!r}")
    return number


def _int(field: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _RowError(field, f"expected a whole number >= {minimum}, got {value!r}")
    return value


def _text(field: str, value: Any) -> str:
    if isinstance(value, _dt.date):
        return value.isoformat()
    if not isinstance(value, str) or not value.strip():
        raise _RowError(field, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _rates(prefix: str, block: Any, extra: Iterable[str] = ()) -> Rates:
    if not isinstance(block, Mapping):
        raise _RowError(prefix, f"expected a mapping of {', '.join(_RATE_FIELDS)}, got {block!r}")
    allowed = (*_RATE_FIELDS, *extra)
    for key in block:
        if key not in allowed:
            raise _RowError(f"{prefix}.{key}", f"unknown field (allowed: {', '.join(allowed)})")
    values: dict[str, Decimal] = {}
    for name in _RATE_FIELDS:
        if name not in block:
            raise _RowError(f"{prefix}.{name}", "missing")
        values[name] = _decimal(f"{prefix}.{name}", block[name])
    return Rates(**values)


def _parse_row(row: Mapping[str, Any]) -> ModelPrice:
    for key in row:
        if key not in _REQUIRED_FIELDS and key not in _OPTIONAL_FIELDS:
            raise _RowError(str(key), "unknown field (check the spelling)")
    for key in _REQUIRED_FIELDS:
        if key not in row or row[key] is None:
            raise _RowError(key, "missing")
    model = _text("model", row["model"])
    if model != model.lower() or any(ch.isspace() for ch in model):
        raise _RowError("model", f"expected a lower-case model id without spaces, got {model!r}")
    aliases_raw = row.get("aliases") or []
    if not isinstance(aliases_raw, list):
        raise _RowError("aliases", f"expected a list of model ids, got {aliases_raw!r}")
    aliases = tuple(_text("aliases", alias).lower() for alias in aliases_raw)
    us_residency = row.get("us_residency", False)
    if not isinstance(us_residency, bool):
        raise _RowError("us_residency", f"expected true or false, got {us_residency!r}")
    fast = _rates("fast", row["fast"]) if row.get("fast") is not None else None
    long_prompt: LongPromptTier | None = None
    if row.get("long_prompt") is not None:
        block = row["long_prompt"]
        rates = _rates("long_prompt", block, extra=("threshold_tokens", "requires_beta"))
        threshold = _int("long_prompt.threshold_tokens", block.get("threshold_tokens"), minimum=1)
        beta = block.get("requires_beta")
        long_prompt = LongPromptTier(threshold, rates, _text("long_prompt.requires_beta", beta) if beta else None)
    return ModelPrice(
        model=model,
        family=_text("family", row["family"]).lower(),
        aliases=aliases,
        input=_decimal("input", row["input"]),
        output=_decimal("output", row["output"]),
        cache_write_5m=_decimal("cache_write_5m", row["cache_write_5m"]),
        cache_write_1h=_decimal("cache_write_1h", row["cache_write_1h"]),
        cache_read=_decimal("cache_read", row["cache_read"]),
        min_cacheable_tokens=_int("min_cacheable_tokens", row["min_cacheable_tokens"], minimum=0),
        context_window=_int("context_window", row["context_window"], minimum=1),
        source=_text("source", row["source"]),
        as_of=_text("as_of", row["as_of"]),
        us_residency=us_residency,
        fast=fast,
        long_prompt=long_prompt,
    )


@dataclass(frozen=True, slots=True)
class _Table:
    as_of: str
    batch: Decimal
    geo_us: Decimal
    models: tuple[ModelPrice, ...]


def _parse_table(data: Any, origin: str) -> _Table:
    def fail(message: str) -> PriceTableError:
        return PriceTableError(f"{origin}: {message}")

    if not isinstance(data, Mapping):
        raise fail("expected a mapping with 'schema_version', 'as_of', 'modifiers' and 'models'")
    for key in data:
        if key not in _TOP_LEVEL_FIELDS:
            raise fail(f"unknown top-level field {key!r} (allowed: {', '.join(_TOP_LEVEL_FIELDS)})")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise fail(f"field 'schema_version': expected {SCHEMA_VERSION}, got {data.get('schema_version')!r}")
    if data.get("currency", "USD") != "USD":
        raise fail(f"field 'currency': only USD is supported, got {data.get('currency')!r}")
    if data.get("unit", "per_million_tokens") != "per_million_tokens":
        raise fail(f"field 'unit': expected 'per_million_tokens', got {data.get('unit')!r}")
    try:
        as_of = _text("as_of", data.get("as_of"))
        modifiers = data.get("modifiers") or {}
        if not isinstance(modifiers, Mapping):
            raise _RowError("modifiers", f"expected a mapping, got {modifiers!r}")
        for key in modifiers:
            if key not in ("batch", "inference_geo_us"):
                raise _RowError(f"modifiers.{key}", "unknown modifier (allowed: batch, inference_geo_us)")
        batch = _decimal("modifiers.batch", modifiers.get("batch", "0.5"))
        geo_us = _decimal("modifiers.inference_geo_us", modifiers.get("inference_geo_us", "1.1"))
    except _RowError as exc:
        raise fail(f"field {exc.field!r}: {exc.problem}") from None
    rows = data.get("models")
    if not isinstance(rows, list) or not rows:
        raise fail("field 'models': expected a non-empty list of model rows")
    models: list[ModelPrice] = []
    for index, row in enumerate(rows, start=1):
        name = row.get("model") if isinstance(row, Mapping) else None
        label = f"model {name!r}" if isinstance(name, str) and name else f"model row #{index}"
        if not isinstance(row, Mapping):
            raise fail(f"{label}: expected a mapping of fields, got {row!r}")
        try:
            models.append(_parse_row(row))
        except _RowError as exc:
            raise fail(f"{label}: field {exc.field!r}: {exc.problem}") from None
    return _Table(as_of, batch, geo_us, tuple(models))


# --------------------------------------------------------------------------------------------- resolution

_ONE_M_SUFFIX = re.compile(r"\[1m\]$")
_DATE_SUFFIX = re.compile(r"[-@]\d{8}$")
_PROVIDER_PREFIX = re.compile(r"^(?:[a-z]{2,4}\.)?anthropic[./]")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$")


def _normalize(model: str) -> str:
    return _ONE_M_SUFFIX.sub("", model.strip().lower())


def _candidates(model: str) -> list[str]:
    """Ids to try, most specific first: as given, then without a date / provider decoration."""
    first = _normalize(model)
    found = [first]
    bare = _BEDROCK_VERSION.sub("", _PROVIDER_PREFIX.sub("", first))
    for candidate in (bare, _DATE_SUFFIX.sub("", bare)):
        if candidate not in found:
            found.append(candidate)
    return found


# --------------------------------------------------------------------------------------------- the book

_RESOLVED_MAX = 4096


class PriceBook:
    """An immutable price table with model-id resolution and the cost function."""

    def __init__(
        self,
        models: Iterable[ModelPrice],
        *,
        as_of: str,
        fallback_model: str = DEFAULT_FALLBACK_MODEL,
        batch_multiplier: Decimal = Decimal("0.5"),
        geo_us_multiplier: Decimal = Decimal("1.1"),
        origin: str = "<memory>",
    ) -> None:
        self._models = tuple(models)
        self._as_of = as_of
        self._origin = origin
        self._batch = batch_multiplier
        self._geo_us = geo_us_multiplier
        self._index: dict[str, ModelPrice] = {}
        self._resolved: dict[str, ModelPrice | None] = {}
        """Model id -> its row (or None): ``_resolve`` runs three regexes per id, and every request asks twice."""
        for price in self._models:
            for name in (price.model, *price.aliases):
                key = _normalize(name)
                other = self._index.get(key)
                if other is not None:
                    raise PriceTableError(
                        f"{origin}: model {price.model!r}: field 'aliases': id {name!r} is already used by "
                        f"model {other.model!r}"
                    )
                self._index[key] = price
        resolved = self._resolve(fallback_model)
        if resolved is None:
            raise PriceTableError(
                f"{origin}: the fallback model {fallback_model!r} (pricing.fallback_model) is not in the table"
            )
        self._fallback = resolved
        self._warned: set[tuple[str, str]] = set()

    # -- construction

    @classmethod
    def from_text(cls, text: str, *, origin: str = "<text>", fallback_model: str = DEFAULT_FALLBACK_MODEL) -> PriceBook:
        """Parse and validate a YAML price table."""
        try:
            data = yaml.load(text, Loader=_ExactLoader)  # a SafeLoader subclass: no arbitrary objects
        except yaml.YAMLError as exc:
            raise PriceTableError(f"{origin}: not valid YAML: {exc}") from None
        table = _parse_table(data, origin)
        return cls(
            table.models,
            as_of=table.as_of,
            fallback_model=fallback_model,
            batch_multiplier=table.batch,
            geo_us_multiplier=table.geo_us,
            origin=origin,
        )

    @classmethod
    def bundled(cls, *, fallback_model: str = DEFAULT_FALLBACK_MODEL) -> PriceBook:
        """The table shipped inside the package."""
        text = resources.files("clawback").joinpath("data/prices.yaml").read_text(encoding="utf-8")
        return cls.from_text(text, origin="clawback/data/prices.yaml", fallback_model=fallback_model)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, fallback_model: str = DEFAULT_FALLBACK_MODEL) -> PriceBook:
        """A table from a file (same schema as the bundled one)."""
        file = Path(path).expanduser()
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceTableError(f"{file}: cannot read the price table: {exc.strerror or exc}") from None
        return cls.from_text(text, origin=str(file), fallback_model=fallback_model)

    # -- look-ups

    @property
    def as_of(self) -> str:
        """The date of the table as a whole (rows carry their own ``as_of`` too)."""
        return self._as_of

    @property
    def origin(self) -> str:
        """Where the table was read from, for messages."""
        return self._origin

    @property
    def fallback(self) -> ModelPrice:
        """The row unknown models are priced as."""
        return self._fallback

    def models(self) -> list[ModelPrice]:
        """Every row, in table order."""
        return list(self._models)

    def _resolve(self, model: str) -> ModelPrice | None:
        try:
            return self._resolved[model]
        except KeyError:
            pass
        found = next((p for c in _candidates(model) if (p := self._index.get(c)) is not None), None)
        if len(self._resolved) >= _RESOLVED_MAX:  # ids come from callers: bounded
            self._resolved.clear()
        self._resolved[model] = found
        return found

    def is_known(self, model: str) -> bool:
        """Whether ``model`` (an id, alias, dated id, or with a ``[1m]`` suffix) has its own row."""
        return self._resolve(model) is not None

    def get(self, model: str) -> ModelPrice:
        """The row for ``model``; an unknown id gets the fallback row and a warning, never a $0 price."""
        price = self._resolve(model)
        if price is not None:
            return price
        self._warn_once(
            "unknown-model",
            model,
            "unknown model %r: priced as %s; add it to the price table (clawback pricing update)",
            model,
            self._fallback.model,
        )
        return self._fallback

    def _warn_once(self, kind: str, key: str, message: str, *args: object) -> None:
        # Once per distinct id: a gateway serving an unknown model would otherwise log on every request.
        if (kind, key) not in self._warned:
            self._warned.add((kind, key))
            logger.warning(message, *args)

    # -- money

    def cost(
        self,
        model: str,
        usage: Usage,
        *,
        batch: bool = False,
        inference_geo: str | None = None,
        speed: str | None = None,
        long_context: bool = False,
    ) -> Cost:
        """What Anthropic bills for one request's final ``usage``.

        ``usage`` must be the final cumulative figures (for a stream: ``message_start`` updated by each
        ``message_delta``), never a sum of events. ``long_context`` says the request sent the 1M-context beta;
        a beta-gated tier applies when the prompt is above its threshold and either the flag is set or the
        prompt alone proves the beta was on (it is larger than the model's standard window).
        """
        price = self.get(model)
        rates = self._rates(price, usage, speed=speed, long_context=long_context)
        multiplier = _ONE
        if batch:
            multiplier *= self._batch
        if inference_geo is not None and inference_geo.lower() == "us":
            if price.us_residency:
                multiplier *= self._geo_us
            else:
                self._warn_once(
                    "geo",
                    price.model,
                    "inference_geo 'us' on %s: the US-only premium applies to Claude 4.6 and later only; priced "
                    "at standard rates",
                    price.model,
                )
        elif inference_geo is not None and inference_geo.lower() != "global":
            self._warn_once("geo-value", inference_geo, "unknown inference_geo %r: no premium applied", inference_geo)

        def amount(tokens: int, rate: Decimal) -> Decimal:
            return Decimal(tokens) * rate * multiplier / MILLION

        return Cost(
            input=amount(usage.input_tokens, rates.input),
            cache_write_5m=amount(usage.cache_write_5m_input_tokens, rates.cache_write_5m),
            cache_write_1h=amount(usage.cache_write_1h_input_tokens, rates.cache_write_1h),
            cache_read=amount(usage.cache_read_input_tokens, rates.cache_read),
            output=amount(usage.output_tokens, rates.output),
        )

    def micro_usd(
        self,
        model: str,
        usage: Usage,
        *,
        batch: bool = False,
        inference_geo: str | None = None,
        speed: str | None = None,
        long_context: bool = False,
    ) -> int:
        """``cost(...).micro_usd``, the figure the ledger books, without building a ``Cost``.

        At standard multipliers (no batch discount, no US-residency premium) it is integer arithmetic on the
        rates in micro-dollars per million tokens: the same exact value as the ``Decimal`` path (which rounds
        nothing either below 28 digits), in a fifth of the time; it runs for every request
        (``tests/unit/test_pricing_micro.py`` checks the two agree). Any multiplier takes ``cost``.
        """
        geo = inference_geo.lower() if inference_geo is not None else None
        if batch or (geo is not None and geo != "global"):
            return self.cost(
                model, usage, batch=batch, inference_geo=inference_geo, speed=speed, long_context=long_context
            ).micro_usd
        scaled = _scaled_rates(self._rates(self.get(model), usage, speed=speed, long_context=long_context))
        if scaled is None:
            return self.cost(model, usage, speed=speed, long_context=long_context).micro_usd
        rate_in, rate_out, rate_w5, rate_w1, rate_read = scaled
        total = (
            usage.input_tokens * rate_in
            + usage.output_tokens * rate_out
            + usage.cache_write_5m_input_tokens * rate_w5
            + usage.cache_write_1h_input_tokens * rate_w1
            + usage.cache_read_input_tokens * rate_read
        )  # micro-dollars x 10^6
        micro, rest = divmod(total, 1_000_000)
        if rest > 500_000 or (rest == 500_000 and micro % 2):  # half to even, as ``to_micro_usd``
            micro += 1
        return micro

    def worst_case(
        self,
        model: str,
        input_tokens: int,
        max_tokens: int,
        *,
        inference_geo: str | None = None,
        speed: str | None = None,
    ) -> Cost:
        """The most one request can be billed: every prompt token at the dearest prompt rate (uncached input,
        a 5-minute or a 1-hour cache write, whichever the model prices highest) and ``max_tokens`` of output.

        Budgets reserve this before a call leaves (``clawback.pipeline.budget``). Cache reads are cheaper than
        every other prompt rate, so a request that reads the cache costs less; a prompt above a long-context
        threshold is priced at the tier's rates even without the beta header (the dearer assumption).
        """
        candidates = (
            Usage(input_tokens=input_tokens, output_tokens=max_tokens),
            Usage(cache_write_5m_input_tokens=input_tokens, output_tokens=max_tokens),
            Usage(cache_write_1h_input_tokens=input_tokens, output_tokens=max_tokens),
        )
        costs = [
            self.cost(model, usage, inference_geo=inference_geo, speed=speed, long_context=True) for usage in candidates
        ]
        return max(costs, key=lambda cost: cost.total)

    def _rates(self, price: ModelPrice, usage: Usage, *, speed: str | None, long_context: bool) -> Rates:
        if speed is not None and speed != "standard":
            if speed == "fast" and price.fast is not None:
                return price.fast  # fast rates cover the whole context window; no model has both
            if speed == "fast":
                self._warn_once(
                    "fast",
                    price.model,
                    "speed 'fast' on %s: no fast-mode prices in the table; priced at standard rates",
                    price.model,
                )
            else:
                self._warn_once("speed", speed, "unknown speed %r: priced at standard rates", speed)
        tier = price.long_prompt
        if tier is not None and usage.total_input_tokens > tier.threshold_tokens:
            gated = tier.requires_beta is not None
            if not gated or long_context or usage.total_input_tokens > price.context_window:
                return tier.rates
        return price.rates


# --------------------------------------------------------------------------------------------- the default book


def user_price_file() -> Path:
    """Where ``clawback pricing update`` installs a table when no ``pricing.data_file`` is configured."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "clawback" / "prices.yaml"


def load_price_book(settings: PricingSettings | None = None) -> PriceBook:
    """The table the product uses: ``pricing.data_file``, else the user's installed table, else the bundled one."""
    settings = settings or PricingSettings()
    fallback = settings.fallback_model
    if settings.data_file:
        return PriceBook.from_file(settings.data_file, fallback_model=fallback)
    user_file = user_price_file()
    if user_file.is_file():
        book = PriceBook.from_file(user_file, fallback_model=fallback)
        bundled = PriceBook.bundled(fallback_model=fallback)
        if book.as_of < bundled.as_of:
            logger.warning(
                "the installed price table %s (as of %s) is older than the bundled one (as of %s); update or delete it",
                user_file,
                book.as_of,
                bundled.as_of,
            )
        return book
    return PriceBook.bundled(fallback_model=fallback)


# Keep the dataclass field list and the table schema in step: a new rate field must be parsed.
assert tuple(f.name for f in fields(Rates)) == _RATE_FIELDS
