"""Tools, tool_choice and structured outputs with the openai SDK, on both gateways.

The model is random: what makes its calls and JSON valid is constrained decoding (the
local engine's grammar; the upstream gateway forwards the fields to it). So tests check
validity against the schemas, the SDK's assembly of streamed calls, and the prompt
(the tools really reach the chat template), never words.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from .test_openai_api import MODEL, client_for

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                            "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                        "b": {"type": "integer", "minimum": 0, "maximum": 99}},
       "required": ["a", "b"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": ADD}}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def create(gateway, **kwargs):
    return client_for(gateway).chat.completions.create(model=MODEL, messages=kwargs.pop("messages", ASK),
                                                       max_tokens=kwargs.pop("max_tokens", 200), **kwargs)


def assert_valid_call(call) -> None:
    assert call.type == "function" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_tool_definitions_reach_the_chat_template(gateway):
    plain = create(gateway, max_tokens=1)
    with_tools = create(gateway, max_tokens=1, tools=TOOLS)
    without = create(gateway, max_tokens=1, tools=TOOLS, tool_choice="none")
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 50
    assert without.usage.prompt_tokens == plain.usage.prompt_tokens  # none: the model is not offered them


def test_tool_choice_required_always_gives_a_valid_call(gateway):
    for seed in (1, 2):
        reply = create(gateway, tools=TOOLS, tool_choice="required", seed=seed, temperature=1.0)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        for call in choice.message.tool_calls:
            assert_valid_call(call)


def test_a_named_tool_choice_calls_that_tool(gateway):
    reply = create(gateway, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}})
    calls = reply.choices[0].message.tool_calls
    assert [call.function.name for call in calls] == ["add"]
    assert_valid_call(calls[0])


def test_streamed_tool_calls_are_assembled_by_the_sdk(gateway):
    client = client_for(gateway)
    with client.chat.completions.stream(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=200,
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}}) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [call.function.name for call in choice.message.tool_calls] == ["get_weather"]
    assert_valid_call(choice.message.tool_calls[0])


def test_a_second_turn_carries_the_call_and_the_tools_result(gateway):
    first = create(gateway, tools=TOOLS, tool_choice="required")
    message = first.choices[0].message
    call = message.tool_calls[0]
    messages = [*ASK, message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"}]
    second = create(gateway, messages=messages, tools=TOOLS, max_tokens=5)
    assert second.choices[0].finish_reason in ("length", "stop", "tool_calls")
    # The call and the tool's result were rendered into the prompt of the second turn.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens - 10


def test_json_schema_response_format_validates_by_construction(gateway):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9},
                                               "colour": {"enum": ["red", "blue"]},
                                               "tags": {"type": "array", "items": {"enum": ["a", "b"]},
                                                        "maxItems": 3}},
              "required": ["n", "colour", "tags"], "additionalProperties": False}
    reply = create(gateway, response_format={"type": "json_schema",
                                             "json_schema": {"name": "thing", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_json_object_response_format_is_an_object(gateway):
    reply = create(gateway, max_tokens=300, response_format={"type": "json_object"}, temperature=0)
    choice = reply.choices[0]
    if choice.finish_reason == "length":  # an unbounded object may outlast max_tokens, and must say so
        assert reply.usage.completion_tokens == 300
    else:
        assert choice.finish_reason == "stop"
        assert isinstance(json.loads(choice.message.content), dict)  # strict: no raw control characters


@pytest.mark.parametrize("kwargs, param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "(unclosed"}}}}}}, "response_format"),
])
def test_what_cannot_be_done_is_a_400_naming_the_field(gateway, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        create(gateway, **kwargs)
    assert info.value.body["param"] == param
