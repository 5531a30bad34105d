"""The Responses API with the openai SDK and openai-agents' default model, against the
local gateway and the upstream gateway in front of it (which forwards chat completions
only, as LMDeploy 0.11 would: the translation is the gateway's own)."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import httpx
import openai
import pytest

from .conftest import png_bytes
from .test_openai_api import MODEL, client_for, data_url

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
                               "required": ["city"], "additionalProperties": False}}
CHAT_WEATHER_TOOL = {"type": "function", "function": {k: v for k, v in WEATHER_TOOL.items() if k != "type"}}


def image_input(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "input_text", "text": text},
                                         {"type": "input_image", "image_url": data_url(png_bytes())}]}]


def test_text_and_image_reach_the_model_as_in_chat(gateway):
    client = client_for(gateway)
    response = client.responses.create(model=MODEL, input=image_input("What is this?"), instructions="Be brief.",
                                       max_output_tokens=5, temperature=0)
    assert response.object == "response" and response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].type == "message" and response.output_text
    chat = client.chat.completions.create(model=MODEL, max_tokens=5, temperature=0, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": data_url(png_bytes())}}]}])
    assert response.usage.input_tokens == chat.usage.prompt_tokens  # the image reached the model
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.output_tokens == 5 and response.usage.total_tokens == chat.usage.total_tokens


def test_images_go_through_the_media_policy(gateway):
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(gateway).responses.create(model=MODEL, max_output_tokens=2, input=[
            {"role": "user", "content": [{"type": "input_image", "image_url": "http://169.254.169.254/latest"}]}])
    assert caught.value.code == "image_url_refused"


def test_a_function_tool_across_two_turns(gateway):
    client = client_for(gateway)
    first = client.responses.create(model=MODEL, input=image_input("Weather?"), tools=[WEATHER_TOOL],
                                    tool_choice="required", max_output_tokens=200)
    assert first.status == "completed"
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id
    assert json.loads(call.arguments)["city"] in ("Paris", "Oslo")

    second_input = [*image_input("Weather?"), *[item.model_dump(exclude_none=True) for item in first.output],
                    {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}]
    second = client.responses.create(model=MODEL, input=second_input, tools=[WEATHER_TOOL], max_output_tokens=3,
                                     temperature=0)
    # The same conversation as chat messages: the tool's output reached the model.
    chat = client.chat.completions.create(model=MODEL, max_tokens=3, temperature=0, tools=[CHAT_WEATHER_TOOL],
                                          messages=[
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image_url", "image_url": {"url": data_url(png_bytes())}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny, 21 C"}])
    assert second.usage.input_tokens == chat.usage.prompt_tokens
    assert second.output_text == chat.choices[0].message.content


def raw_events(gateway, body: dict) -> list[tuple[str, dict]]:
    """The SSE events exactly as sent: (event name, data)."""
    events = []
    with httpx.stream("POST", f"{gateway.url}/v1/responses", json={"model": MODEL, "stream": True, **body},
                      timeout=120) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["type"] == name
                events.append((name, data))
    return events


def test_streamed_text_events(gateway):
    events = raw_events(gateway, {"input": "Hello", "max_output_tokens": 6, "temperature": 0,
                                  "include": ["message.output_text.logprobs"]})
    names = [name for name, _ in events]
    assert names[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert names[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]  # it hit max_output_tokens
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    deltas = [data for name, data in events if name == "response.output_text.delta"]
    text = "".join(d["delta"] for d in deltas)
    final = events[-1][1]["response"]
    assert final["output"][0]["content"][0]["text"] == text == events[-4][1]["text"]
    assert final["usage"]["output_tokens"] == 6
    assert sum(len(d["logprobs"]) for d in deltas) == 6  # one score per token, sent with its text
    whole = client_for(gateway).responses.create(model=MODEL, input="Hello", max_output_tokens=6, temperature=0)
    assert whole.output_text == text


def test_streamed_function_call_events_and_the_sdk_helper(gateway):
    events = raw_events(gateway, {"input": "Weather?", "tools": [WEATHER_TOOL], "tool_choice": "required",
                                  "max_output_tokens": 200})
    names = [name for name, _ in events]
    assert names[2] == "response.output_item.added" and events[2][1]["item"]["type"] == "function_call"
    arguments = "".join(d["delta"] for n, d in events if n == "response.function_call_arguments.delta")
    done = next(d for n, d in events if n == "response.function_call_arguments.done")
    assert done["arguments"] == arguments and done["name"] == "get_weather"
    assert names[-1] == "response.completed"
    assert events[-1][1]["response"]["output"][0]["arguments"] == arguments

    with client_for(gateway).responses.stream(model=MODEL, input="Weather?", tools=[WEATHER_TOOL],
                                              tool_choice="required", max_output_tokens=200) as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call" and json.loads(final.output[0].arguments)


def test_structured_output_through_text_format(gateway):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    response = client_for(gateway).responses.create(model=MODEL, input="Answer.", max_output_tokens=60, text={
        "format": {"type": "json_schema", "name": "verdict", "schema": schema, "strict": True}})
    assert response.status == "completed" and isinstance(json.loads(response.output_text)["ok"], bool)


@pytest.mark.parametrize("fields, param", [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
     "input[0].content[0].file_data"),  # a PDF is read inline (file_data); there is no file storage
    ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
    ({"background": True}, "background"),
    ({"include": ["file_search_call.results"]}, "include"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
])
def test_what_cannot_be_served_is_a_400_naming_the_field(gateway, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(gateway).responses.create(**{"model": MODEL, "input": "hi", "max_output_tokens": 2, **fields})
    assert caught.value.param == param


def test_openai_agents_default_model_runs_a_tool_turn(gateway):
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    cities: list[str] = []

    @function_tool
    def get_weather(city: Literal["Paris", "Oslo"]) -> str:
        """The weather in a city."""
        cities.append(city)
        return "sunny"

    async def run() -> tuple[object, object]:
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=120)
        # OpenAIResponsesModel is the model class openai-agents uses by default.
        agent = Agent(name="weather", instructions="Use the tool.", tools=[get_weather],
                      model=OpenAIResponsesModel(MODEL, client), tool_use_behavior="stop_on_first_tool",
                      model_settings=ModelSettings(tool_choice="required", max_tokens=200))
        whole = await Runner.run(agent, "Weather in Paris?", max_turns=2)
        streamed = Runner.run_streamed(agent, "Weather in Oslo?", max_turns=2)
        async for _ in streamed.stream_events():
            pass
        return whole.final_output, streamed.final_output

    assert asyncio.run(run()) == ("sunny", "sunny")
    assert len(cities) == 2


def test_a_replayed_answer_with_text_and_a_call_is_one_assistant_turn(gateway):
    client = client_for(gateway)
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
    replay = client.responses.create(model=MODEL, tools=[WEATHER_TOOL], max_output_tokens=1, input=[
        {"role": "user", "content": "Weather?"},
        {"type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
        call, {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}])
    chat = client.chat.completions.create(model=MODEL, max_tokens=1, tools=[CHAT_WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
    assert replay.usage.input_tokens == chat.usage.prompt_tokens


def test_instructions_and_developer_items_all_reach_the_model(gateway):
    client = client_for(gateway)
    both = client.responses.create(model=MODEL, instructions="Rule one.", max_output_tokens=1, input=[
        {"role": "developer", "content": "Rule two, which is longer than the first."},
        {"role": "user", "content": "hi"}])
    one = client.responses.create(model=MODEL, instructions="Rule one.", max_output_tokens=1, input="hi")
    assert both.usage.input_tokens > one.usage.input_tokens


@pytest.mark.parametrize("fields, param", [
    ({"extra_body": {"n": 3}}, "n"),
    ({"text": {"format": "json"}}, "text.format"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": 5}]}, "input[0].arguments"),
])
def test_more_fields_that_cannot_be_served(gateway, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(gateway).responses.create(**{"model": MODEL, "input": "hi", "max_output_tokens": 2, **fields})
    assert caught.value.param == param
