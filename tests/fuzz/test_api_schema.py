"""Schemathesis against the app's own OpenAPI schema, every route, through a real server.

Bounded: a few dozen generated requests per operation (SCHEMATHESIS_EXAMPLES to change).
No request may get a 500, and every error must be in OpenAI's envelope.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from ..servers import ServerProcess

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def fuzz_server(tiny_model_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("fuzz")
    # A short context keeps every generated request cheap for the tiny model.
    server = ServerProcess({"MODEL_PATH": str(tiny_model_dir), "MAX_MODEL_LEN": "160", "MAX_TOKENS": "4",
                            "MEDIA_ALLOW_REMOTE": "false"}, logs, "fuzz").start()
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


def check(case, base_url: str) -> None:
    response = case.call(base_url=base_url, timeout=60)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert {"message", "type", "param", "code"} <= set(error) and error["message"], response.text[:300]


def test_every_operation_no_500_and_openai_shaped_errors(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9  # /v1 (2), /infer (2), /analyze (2), /health, /metrics, /gpu/status
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            check(case, fuzz_server.url)

        run()
