"""Upstream error bodies (as LMDeploy 0.18 really sent them) → our statuses and messages."""

from __future__ import annotations

import json

import pytest

from vlserve.engines.upstream.errors import upstream_error
from vlserve.errors import ErrorKind, ServiceError

# Bodies copied from tests/fixtures/lmdeploy-0.18.0/transcripts.txt
LMDEPLOY_MISSING_MESSAGES = b'{"message":"messages: Field required","type":"invalid_request_error","code":400,"param":null,"object":"error"}'
LMDEPLOY_UNKNOWN_MODEL = b'{"message":"The model \'no-such-model\' does not exist.","type":"not_found_error","code":404,"param":null,"object":"error"}'
LMDEPLOY_NOT_FOUND_ROUTE = b'{"detail":"Not Found"}'


@pytest.mark.parametrize("status, body, kind, out_status, message", [
    (400, LMDEPLOY_MISSING_MESSAGES, ErrorKind.BAD_REQUEST, 400, "messages: Field required"),
    (404, LMDEPLOY_UNKNOWN_MODEL, ErrorKind.MODEL_NOT_FOUND, 404, "does not exist"),
    (404, LMDEPLOY_NOT_FOUND_ROUTE, ErrorKind.MODEL_NOT_FOUND, 404, "Not Found"),
    (400, b'{"error": {"message": "nested openai style", "type": "x"}}', ErrorKind.BAD_REQUEST, 400, "nested openai style"),
    (422, b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', ErrorKind.VALIDATION, 422, "field required"),
    (409, b"conflict, plain text", ErrorKind.BAD_REQUEST, 409, "conflict"),
    (401, b'{"detail": "bad key"}', ErrorKind.UPSTREAM_ERROR, 502, "credentials"),
    (500, b"Internal Server Error", ErrorKind.UPSTREAM_ERROR, 502, "HTTP 500"),
    (503, b'{"message": "loading"}', ErrorKind.ENGINE_UNAVAILABLE, 503, "loading"),
    (504, b"", ErrorKind.UPSTREAM_TIMEOUT, 504, "HTTP 504"),
    (429, b'{"message": "busy"}', ErrorKind.OVERLOADED, 429, "busy"),
])
def test_upstream_errors_keep_meaning(status, body, kind, out_status, message):
    error = upstream_error(status, body, {})
    assert error.kind is kind and error.status == out_status
    assert message in error.message


def test_an_openai_envelope_keeps_its_code_param_and_type():
    # What vLLM (or a vlserve upstream) answers for a prompt that does not fit.
    body = (b'{"error": {"message": "This model\'s maximum context length is 4096 tokens.", '
            b'"type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}')
    error = upstream_error(400, body, {})
    assert error.status == 400
    assert error.body()["error"] == {"message": "This model's maximum context length is 4096 tokens.",
                                     "type": "invalid_request_error", "param": "messages",
                                     "code": "context_length_exceeded"}
    assert upstream_error(400, LMDEPLOY_MISSING_MESSAGES, {}).code == "bad_request"  # flat: mapped by status


@pytest.mark.parametrize("status, message, kind", [
    # vLLM's words for a prompt over its context (serving_engine.py), old and new, and its
    # max_tokens check; LMDeploy 0.16+'s (serve/core/async_engine.py, exceptions.py)
    (400, "This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens.",
     ErrorKind.CONTEXT_TOO_LONG),
    (400, "The decoder prompt (length 5000) is longer than the maximum model length of 4096.",
     ErrorKind.CONTEXT_TOO_LONG),
    (400, "Input length (5000) must be smaller than the model context length (4096).", ErrorKind.CONTEXT_TOO_LONG),
    (400, "The request exceeds the model context length.", ErrorKind.CONTEXT_TOO_LONG),
    (500, "CUDA out of memory. Tried to allocate 2.00 GiB", ErrorKind.ENGINE_OUT_OF_MEMORY),
    (400, "messages: Field required", ErrorKind.BAD_REQUEST),
    (500, "internal error happened, status code 6", ErrorKind.UPSTREAM_ERROR),
])
def test_prompts_that_do_not_fit_are_told_apart_in_every_engines_words(status, message, kind):
    error = upstream_error(status, json.dumps({"message": message, "code": status, "object": "error"}).encode(), {})
    assert error.kind is kind
    assert error.prompt_too_big is (kind is not ErrorKind.BAD_REQUEST and kind is not ErrorKind.UPSTREAM_ERROR)


def test_retry_after_is_passed_on():
    assert upstream_error(429, b"{}", {"Retry-After": "7"}).headers == {"Retry-After": "7"}


def test_envelope_and_final_sse_event_are_openai_shaped():
    error = ServiceError(ErrorKind.UPSTREAM_TIMEOUT, "too slow")
    assert error.body() == {"error": {"message": "too slow", "type": "timeout_error", "param": None,
                                      "code": "upstream_timeout"}}
    event = error.sse_event()
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:]) == error.body()
