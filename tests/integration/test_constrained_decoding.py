"""Structured outputs valid by construction on the local engine, seed after seed.

The tiny random model writes nonsense, so it is the hardest client a grammar has: every
answer that ends with `stop` must parse with a strict JSON parser (no raw control
characters in strings) and validate; every other answer must say `length` and have used
every token it was allowed. Nothing is counted valid because it starts with `{`.
Runs the LocalEngine in this process (no server), 50 seeds per case.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from vlserve.config import Settings
from vlserve.engines.base import EngineRequest
from vlserve.engines.local.engine import LocalEngine

from ..waiting import eventually_async

SEEDS = range(50)
MAX_TOKENS = 64
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["name", "age"], "additionalProperties": False}
TAGS = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "minLength": 1,
                                                                             "maxLength": 5}, "maxItems": 3},
                                         "ok": {"type": "boolean"}},
        "required": ["tags", "ok"], "additionalProperties": False}
FREE_TEXT = {"type": "object", "properties": {"note": {"type": "string"}, "colour": {"enum": ["red", "blue"]}},
             "required": ["note", "colour"], "additionalProperties": False}
# (response_format, the schema an answer must validate against, whether most answers
# finish within MAX_TOKENS: a random model rarely closes an unbounded string)
CASES = {
    "json_object": ({"type": "json_object"}, {"type": "object"}, False),
    "bounded strings": ({"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}, PERSON, True),
    "bounded array items": ({"type": "json_schema", "json_schema": {"name": "tags", "schema": TAGS}}, TAGS, True),
    "free strings and enum": ({"type": "json_schema", "json_schema": {"name": "note", "schema": FREE_TEXT}},
                              FREE_TEXT, False),
}
TOOL = {"type": "function", "function": {"name": "set_person", "parameters": PERSON}}


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tmp_path_factory):
    engine = LocalEngine(Settings(MODEL_PATH=str(tiny_model_dir), VLSERVE_CACHE_DIR=str(tmp_path_factory.mktemp("c"))))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(engine.start())
    assert loop.run_until_complete(eventually_async(lambda: engine.status().ready)), engine.status().detail
    yield engine, loop
    loop.run_until_complete(engine.close())
    loop.close()


def answer(engine_and_loop, seed: int, max_tokens: int = MAX_TOKENS, **fields) -> tuple[dict, dict]:
    engine, loop = engine_and_loop
    body = {"model": "qwen3-vl-tiny-random", "messages": [{"role": "user", "content": "Reply in JSON."}],
            "max_tokens": max_tokens, "temperature": 1.0, "seed": seed, **fields}
    completion = loop.run_until_complete(engine.complete(EngineRequest(body)))
    return completion["choices"][0], completion["usage"]


@pytest.mark.parametrize("case", CASES)
def test_every_stopped_answer_is_strict_valid_json(engine, case):
    response_format, schema, finishes = CASES[case]
    stopped = 0
    for seed in SEEDS:
        choice, usage = answer(engine, seed, response_format=response_format)
        text = choice["message"]["content"]
        if choice["finish_reason"] == "length":
            assert usage["completion_tokens"] == MAX_TOKENS, (seed, text)
            continue
        assert choice["finish_reason"] == "stop", (seed, choice)
        jsonschema.validate(json.loads(text), schema)  # json.loads is strict: control characters fail
        stopped += 1
    if finishes:  # the property was exercised, not skipped by answers cut short
        assert stopped >= len(SEEDS) // 2


def test_forced_tool_call_arguments_are_strict_valid_json(engine):
    calls = 0
    for seed in SEEDS:
        # The call's opening (<tool_call>, the name) costs a byte-level tokenizer many tokens.
        choice, usage = answer(engine, seed, 2 * MAX_TOKENS, tools=[TOOL], tool_choice="required")
        if choice["finish_reason"] == "length":
            assert usage["completion_tokens"] == 2 * MAX_TOKENS, (seed, choice)
            continue
        assert choice["finish_reason"] == "tool_calls", (seed, choice)
        [call] = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "set_person"
        jsonschema.validate(json.loads(call["function"]["arguments"]), PERSON)
        calls += 1
    assert calls >= len(SEEDS) // 2
