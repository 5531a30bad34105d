"""Constrained decoding's grammars, compiled against the tiny model's real tokenizer."""

from __future__ import annotations

import pytest

from vlserve.engines.local.constraints import Constrainer, chosen_tools
from vlserve.errors import ServiceError

TOOL = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
    "n": {"enum": [1, 2]}}, "required": ["n"]}}}


@pytest.fixture(scope="module")
def constrainer(processor):
    return Constrainer(processor.tokenizer, len(processor.tokenizer), [processor.tokenizer.eos_token_id])


@pytest.mark.parametrize("body", [
    {"tools": [TOOL], "tool_choice": "required"},
    {"tools": [TOOL, {**TOOL, "function": {**TOOL["function"], "name": "sub"}}], "tool_choice": "required"},
    {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "add"}}},
    {"response_format": SCHEMA},
    {"response_format": {"type": "json_object"}},
])
@pytest.mark.parametrize("in_reasoning", [False, True])
def test_constraints_compile_also_after_a_thinking_models_reasoning(constrainer, body, in_reasoning):
    assert constrainer.grammar(body, in_reasoning) is not None


@pytest.mark.parametrize("body", [{}, {"tools": [TOOL]}, {"tools": [TOOL], "tool_choice": "none"},
                                  {"response_format": {"type": "text"}}])
def test_free_text_needs_no_constraint(constrainer, body):
    assert constrainer.grammar(body, False) is None


def test_tool_choice_none_offers_no_tools():
    assert chosen_tools({"tools": [TOOL], "tool_choice": "none"}) == ("none", [])
    assert chosen_tools({"tools": [TOOL]}) == ("auto", [TOOL])


@pytest.mark.parametrize("body, param", [
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "maxLength": "ten"}}}}}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "minLength": None}}}}}}, "response_format"),
])
def test_what_cannot_be_constrained_is_a_400_naming_the_field(constrainer, body, param):
    with pytest.raises(ServiceError) as info:
        constrainer.grammar(body, False)
    assert info.value.status == 400 and info.value.param == param
