"""The one configuration model.

Read from a YAML file (``--config clawback.yaml``) and ``CLAWBACK_*`` environment variables (nested with
``__``: ``CLAWBACK_GATEWAY__PORT=9000``); the environment wins over the file. Everything is validated at
start-up: a bad value stops the process with a message naming the setting, what it got and what is allowed.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = [
    "ConfigError",
    "GatewaySettings",
    "LedgerSettings",
    "PricingSettings",
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


class UpstreamSettings(_Section):
    url: str | None = Field(None, description="Upstream base URL (the simulator, say); unset: the real API")
    api_key: SecretStr | None = None
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(600.0, gt=0)
    max_connections: int = Field(200, ge=1, description="Pooled keep-alive connections to the upstream")


class LedgerSettings(_Section):
    url: str = Field("sqlite:///clawback.db", description="SQLAlchemy URL of the ledger database")
    queue_size: int = Field(10_000, ge=1)
    batch_size: int = Field(200, ge=1)
    flush_interval_s: float = Field(0.25, gt=0)
    journal_path: str = Field("clawback-ledger.journal", description="Spill file when the database is down")


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
    requests_per_minute: int = Field(1_000_000, ge=1)
    input_tokens_per_minute: int = Field(1_000_000_000, ge=1)
    output_tokens_per_minute: int = Field(1_000_000_000, ge=1)
    batch_processing_s: float = Field(1.0, ge=0, description="How long a message batch stays in_progress")
    api_keys: list[str] = Field(default_factory=list, description="Accepted keys; empty accepts any key")


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
