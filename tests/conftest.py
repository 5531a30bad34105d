"""Shared fixtures: the tiny model (built once per session) and real servers on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Usage the test servers record stays out of the home directory (each test that reads it
# gives its server a file of its own).
os.environ.setdefault("USAGE_FILE", os.path.join(tempfile.mkdtemp(prefix="vlserve-usage-"), "usage.sqlite3"))

import pytest
from hypothesis import settings

# `pytest --hypothesis-profile=fuzz` runs the property and fuzz tests much longer.
settings.register_profile("fuzz", max_examples=20_000, deadline=None)

from vlserve.engines.local.tiny_model import ensure_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    import torch
    torch.set_num_threads(1)
    return ensure_tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def processor(tiny_model_dir):
    from transformers import AutoProcessor
    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session; each test that uses it starts from empty."""
    from .redis_server import RedisServer, redis_or_skip

    redis_or_skip()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    redis_server.flush()
    return redis_server.url


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a contract test (one that replays a recording of a real engine or GPU) or a
    browser test may not be skipped: a missing recording or browser must fail the run,
    not pass it silently."""
    outcome = yield
    report = outcome.get_result()
    must_run = item.get_closest_marker("contract") or item.get_closest_marker("browser")
    if report.skipped and os.environ.get("CI") and must_run:
        report.outcome = "failed"
        report.longrepr = f"test skipped in CI: {report.longrepr}"
