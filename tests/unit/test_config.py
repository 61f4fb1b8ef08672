import pytest

from clawback.config import ConfigError, load_settings


def test_bad_values_name_the_setting(tmp_path):
    path = tmp_path / "clawback.yaml"
    path.write_text("gateway:\n  port: 70000\n  prot: 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "gateway.port" in message and "70000" in message
    assert "gateway.prot: unknown setting" in message


def test_environment_overrides_file(tmp_path, monkeypatch):
    path = tmp_path / "clawback.yaml"
    path.write_text("simulator:\n  port: 9001\n  seed: 3\n")
    monkeypatch.setenv("CLAWBACK_SIMULATOR__PORT", "9002")
    settings = load_settings(path)
    assert settings.simulator.port == 9002
    assert settings.simulator.seed == 3


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_redis_urls_are_checked_at_start_up(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("exact_cache:\n  redis_url: localhost:6379\npruning:\n  summary_redis_url: redis://r:6379/1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "exact_cache.redis_url" in message and "redis://" in message and "localhost:6379" in message
    assert "summary_redis_url" not in message  # the good one passes


def test_ledger_url_is_checked_at_start_up(tmp_path):
    path = tmp_path / "c.yaml"
    for url, says in (("mysql://db/x", "sqlite or postgresql, not mysql"), ("nonsense", "not a database URL")):
        path.write_text(f"ledger:\n  url: {url}\n")
        with pytest.raises(ConfigError, match=says):
            load_settings(path)
    path.write_text("ledger:\n  url: postgresql+psycopg://postgres@127.0.0.1:5432/test\n")
    assert load_settings(path).ledger.url.startswith("postgresql+psycopg://")
