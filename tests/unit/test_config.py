from __future__ import annotations

import re
from pathlib import Path

import pytest

from vlserve.config import Settings, SettingsError, load_settings


def test_defaults_serve_the_local_engine(monkeypatch):
    for name in Settings.env_names():
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.engine_kind == "local"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert (settings.temperature, settings.top_p, settings.top_k) == (0.7, 0.8, 20)


@pytest.mark.parametrize("prefix", ["UPSTREAM", "LMDEPLOY"])
def test_origin_env_names_are_read(monkeypatch, prefix):
    # UPSTREAM_* are the names now; the origin design's LMDEPLOY_* still work.
    monkeypatch.setenv(f"{prefix}_BASE_URL", "http://a:23333/, http://b:23333")
    monkeypatch.setenv("MAX_MODEL_LEN", "4096")
    monkeypatch.setenv("TENSOR_PARALLEL_SIZE", "4")
    monkeypatch.setenv(f"{prefix}_TIMEOUT_S", "12.5")
    settings = load_settings()
    assert settings.upstream_base_url == ["http://a:23333", "http://b:23333"]
    assert settings.engine_kind == "upstream"
    assert (settings.max_model_len, settings.tensor_parallel_size, settings.upstream_timeout_s) == (4096, 4, 12.5)


def test_cli_overrides_win(monkeypatch):
    monkeypatch.setenv("PORT", "9000")
    assert load_settings(PORT=9100).port == 9100
    assert load_settings(PORT=None).port == 9000


@pytest.mark.parametrize("name, value", [
    ("MAX_MODEL_LEN", "lots"), ("PORT", "70000"), ("TEMPERATURE", "-1"),
    ("UPSTREAM_BASE_URL", "localhost:23333"), ("LMDEPLOY_BASE_URL", "localhost:23333"), ("VLSERVE_ENGINE", "magic"), ("LOCAL_DEVICE", "tpu"),
])
def test_bad_value_fails_with_one_line_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert name in message and "\n" not in message


def test_upstream_engine_without_url_is_refused(monkeypatch):
    monkeypatch.delenv("UPSTREAM_BASE_URL", raising=False)
    monkeypatch.setenv("VLSERVE_ENGINE", "upstream")
    with pytest.raises(SettingsError, match="UPSTREAM_BASE_URL"):
        load_settings()


def test_readme_table_lists_every_setting():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, re.M))
    assert documented == set(Settings.env_names())


def test_the_access_log_follows_access_log_and_log_level():
    import logging

    from vlserve.server.observability import access_log, configure_access_log

    try:
        for enabled, level, expected in [(True, "info", True), (True, "debug", True), (True, "warning", False),
                                         (True, "error", False), (False, "info", False), (False, "debug", False)]:
            configure_access_log(enabled, level)
            assert access_log.isEnabledFor(logging.INFO) is expected, (enabled, level)
    finally:
        configure_access_log()
