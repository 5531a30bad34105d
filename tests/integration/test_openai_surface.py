"""The rest of the OpenAI surface with the openai SDK: model lookup, the completions API,
log-probabilities, several choices. Each test runs against the local gateway and against
the upstream gateway in front of it (whose answers are the local engine's, relayed)."""

from __future__ import annotations

import math

import httpx
import openai
import pytest
import torch

from .test_openai_api import MODEL, client_for


def test_models_retrieve(gateway):
    client = client_for(gateway)
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found" and MODEL in caught.value.message


def test_models_retrieve_takes_ids_with_slashes(upstream_server):
    # Hub-style ids ("Qwen/Qwen3-VL-32B") are one path parameter, not two segments.
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(upstream_server).models.retrieve("Qwen/Qwen3-VL-32B")
    assert "Qwen/Qwen3-VL-32B" in caught.value.message


def test_completions_continue_the_raw_prompt(gateway, processor):
    prompt = "The capital of France is"
    answer = client_for(gateway).completions.create(model=MODEL, prompt=prompt, max_tokens=5, temperature=0)
    choice = answer.choices[0]
    assert answer.object == "text_completion" and choice.finish_reason == "length" and choice.text
    # No chat template: the prompt is exactly the tokens of the text.
    assert answer.usage.prompt_tokens == len(processor.tokenizer(prompt)["input_ids"])
    assert answer.usage.completion_tokens == 5


def test_completions_default_to_16_tokens_and_stream(gateway):
    client = client_for(gateway)
    whole = client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0)
    assert whole.usage.completion_tokens <= 16
    chunks = list(client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_echo_and_legacy_logprobs(gateway):
    client = client_for(gateway)
    echoed = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith("Hello there")
    scored = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=4, temperature=0, logprobs=2)
    logprobs = scored.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 4
    assert "".join(logprobs.tokens) == scored.choices[0].text
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert len(top) == 2 and value <= 0
        assert top[token] == pytest.approx(value) and max(top.values()) == pytest.approx(value)  # greedy


def test_completions_local_refusals_name_the_field(local_server):
    client = client_for(local_server)
    for fields, param in [({"suffix": "end"}, "suffix"), ({"best_of": 3}, "best_of"),
                          ({"prompt": ["one", "two"]}, "prompt"), ({"n": 50}, "n"),
                          ({"echo": True, "logprobs": 1}, "echo")]:
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(**{"model": MODEL, "prompt": "hi", "max_tokens": 2, **fields})
        assert caught.value.param == param, fields


def _model_logprobs(tiny_model_dir, processor, messages, steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens and the log-softmax of the model's own logits at each step."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=steps, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    return tokens, [torch.log_softmax(step[0].float(), dim=-1) for step in out.logits]


def test_logprobs_are_the_models_own_scores(gateway, tiny_model_dir, processor):
    messages = [{"role": "user", "content": "Name a colour."}]
    answer = client_for(gateway).chat.completions.create(model=MODEL, messages=messages, max_tokens=6,
                                                         temperature=0, logprobs=True, top_logprobs=3)
    entries = answer.choices[0].logprobs.content
    tokens, scores = _model_logprobs(tiny_model_dir, processor, messages, 6)
    assert len(entries) == len(tokens) == 6
    for entry, token, step in zip(entries, tokens, scores, strict=True):
        assert entry.token == processor.tokenizer.decode([token])
        assert entry.logprob == pytest.approx(step[token].item(), abs=1e-3)
        values, ids = step.topk(3)
        assert [top.token for top in entry.top_logprobs] == [processor.tokenizer.decode([i]) for i in ids.tolist()]
        assert [top.logprob for top in entry.top_logprobs] == pytest.approx(values.tolist(), abs=1e-3)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token


def test_streamed_logprobs_match_the_whole_answers(gateway):
    client = client_for(gateway)
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "Count."}], "max_tokens": 8,
              "temperature": 0, "logprobs": True, "top_logprobs": 1}
    whole = client.chat.completions.create(**kwargs).choices[0].logprobs.content
    streamed = [entry for chunk in client.chat.completions.create(**kwargs, stream=True) for choice in chunk.choices
                if choice.logprobs for entry in choice.logprobs.content]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in whole]


def test_top_logprobs_without_logprobs_is_refused(gateway):
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(gateway).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                    max_tokens=2, top_logprobs=2)
    assert "logprobs" in caught.value.message


def test_several_choices(gateway):
    client = client_for(gateway)
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 6,
              "temperature": 1.0, "seed": 7, "n": 3}
    answer = client.chat.completions.create(**kwargs)
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in answer.choices]
    assert len(set(texts)) > 1  # sampled independently, not one answer three times
    assert answer.usage.completion_tokens == 18
    assert [c.message.content for c in client.chat.completions.create(**kwargs).choices] == texts  # seeded

    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    streamed = {index: "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices
                               if choice.index == index) for index in range(3)}
    finishes = [choice.index for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    assert sorted(finishes) == [0, 1, 2] and all(streamed.values())
    assert chunks[-1].usage.completion_tokens == 18


def test_logprob_values_are_probabilities(gateway):
    answer = client_for(gateway).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=1.0, seed=1,
        logprobs=True, top_logprobs=20)
    for entry in answer.choices[0].logprobs.content:
        assert len(entry.top_logprobs) == 20
        assert sum(math.exp(top.logprob) for top in entry.top_logprobs) <= 1.0 + 1e-4
        assert entry.logprob <= entry.top_logprobs[0].logprob + 1e-6


def test_the_context_enforced_is_the_one_health_reports(local_server):
    context = httpx.get(f"{local_server.url}/health").json()["max_model_len"]
    client = client_for(local_server)
    for max_tokens in (context, context + 904):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=max_tokens)
        assert f"context of {context} tokens" in caught.value.message and caught.value.param == "max_tokens"


@pytest.mark.parametrize("constraint", [
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
        "additionalProperties": False}}}},
    {"tool_choice": "required", "tools": [{"type": "function", "function": {
        "name": "pick", "parameters": {"type": "object", "properties": {"c": {"type": "string", "enum": ["a", "b"]}},
                                       "required": ["c"], "additionalProperties": False}}}]},
])
def test_several_choices_under_a_constraint_are_each_valid(gateway, constraint):
    import json

    answer = client_for(gateway).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Answer."}], max_tokens=200, n=2, **constraint)
    assert len(answer.choices) == 2
    for choice in answer.choices:
        if "response_format" in constraint:
            assert isinstance(json.loads(choice.message.content)["ok"], bool)
        else:
            assert json.loads(choice.message.tool_calls[0].function.arguments)["c"] in ("a", "b")


def test_completions_edge_values(local_server):
    client = client_for(local_server)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="", max_tokens=2)
    assert caught.value.param == "prompt"
    assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2, logprobs=False).choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=2, logprobs=True)


def test_system_and_developer_messages_all_reach_the_model(gateway, processor):
    messages = [{"role": "system", "content": "Rule one."}, {"role": "user", "content": "hi"},
                {"role": "developer", "content": "Rule two."}]
    answer = client_for(gateway).chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    # Qwen's template renders a system message only first: the gateway joins them there.
    joined = [{"role": "system", "content": "Rule one.\n\nRule two."}, {"role": "user", "content": "hi"}]
    text = processor.apply_chat_template(joined, tokenize=False, add_generation_prompt=True)
    assert answer.usage.prompt_tokens == len(processor.tokenizer(text)["input_ids"])
