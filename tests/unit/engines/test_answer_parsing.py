"""Qwen's raw answer text → OpenAI's fields, whole or in pieces, from either engine."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from vlserve.engines.answer import AnswerStream, parse_answer

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ANSWERS = [
    ("Sure.\n" + CALL, False, ("Sure.", None, ["get_weather"])),
    (CALL + "\n" + CALL.replace("Paris", "Oslo"), False, ("", None, ["get_weather", "get_weather"])),
    ("<think>It is cold.</think>\n\nTake a coat.", False, ("Take a coat.", "It is cold.", [])),
    ("It is cold.</think>\n\nTake a coat.", True, ("Take a coat.", "It is cold.", [])),
    ("It is cold.</think>\n\n" + CALL, True, ("", "It is cold.", ["get_weather"])),
    ("a < b and <tool_ not a tag", False, ("a < b and <tool_ not a tag", None, [])),
    ("<tool_call>not json</tool_call> rest", False, ("<tool_call>not json</tool_call> rest", None, [])),
    # A lone </think> when nothing opened the block: the tag goes, the text stays content,
    # whole or streamed (a stream cannot take back what it sent).
    ("reasoning</think>\n\nanswer", False, ("reasoning\n\nanswer", None, [])),
]


def summary(answer):
    return answer.content, answer.reasoning, [c["function"]["name"] for c in answer.tool_calls]


def test_whole_answers():
    for text, in_reasoning, expected in ANSWERS:
        answer = parse_answer(text, in_reasoning)
        assert summary(answer) == expected, text
        for call in answer.tool_calls:
            assert json.loads(call["function"]["arguments"]) in ({"city": "Paris"}, {"city": "Oslo"})


def streamed(text: str, cuts: list[int], in_reasoning: bool) -> tuple[str, str | None, list[str]]:
    stream, deltas, last = AnswerStream(in_reasoning), [], 0
    for cut in [*sorted(set(cuts)), len(text)]:
        deltas += stream.feed(text[last:cut])
        last = cut
    deltas += stream.finish()
    content = "".join(d.get("content") or "" for d in deltas)
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas) if any(
        "reasoning_content" in d for d in deltas) else None
    names = [c["function"]["name"] for d in deltas for c in d.get("tool_calls", [])]
    assert [c["index"] for d in deltas for c in d.get("tool_calls", [])] == list(range(len(names)))
    return content.strip() if names or reasoning is not None else content, \
        reasoning.strip() if reasoning is not None else None, names


@given(st.sampled_from(ANSWERS), st.lists(st.integers(0, 120), max_size=12))
@settings(max_examples=300, deadline=None)
def test_pieces_cut_anywhere_give_the_whole_answer(case, cuts):
    text, in_reasoning, expected = case
    assert streamed(text, [c for c in cuts if c < len(text)], in_reasoning) == expected


FRAGMENTS = ["<think>", "</think>", "<tool_call>", "</tool_call>", '\n{"name": "f", "arguments": {"a": 1}}\n',
             "Sure.", "\n\n", " ", "a < b", "<tool_", "</thi", "x"]


def deltas_of(text: str, cuts: list[int], in_reasoning: bool, tools: bool) -> list:
    stream, out, last = AnswerStream(in_reasoning, tools), [], 0
    for cut in [*sorted({c for c in cuts if c < len(text)}), len(text)]:
        out += stream.feed(text[last:cut])
        last = cut
    out += stream.finish()
    return out


def accumulated(deltas: list) -> tuple[str, str, list[tuple[str, str]]]:
    content = "".join(d.get("content") or "" for d in deltas)
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    calls = [(c["function"]["name"], c["function"]["arguments"]) for d in deltas for c in d.get("tool_calls", [])]
    return content, reasoning, calls


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=14), st.lists(st.integers(0, 200), max_size=10),
       st.booleans(), st.booleans())
@settings(max_examples=500, deadline=None)
def test_any_answer_reads_the_same_whole_or_cut_anywhere(fragments, cuts, in_reasoning, tools):
    """One parser for both modes: the local engine's whole answers and its streams (and an
    upstream's rewritten ones) agree on content, reasoning and calls for every cut."""
    text = "".join(fragments)
    whole = accumulated(deltas_of(text, [], in_reasoning, tools))
    assert accumulated(deltas_of(text, cuts, in_reasoning, tools)) == whole
    answer = parse_answer(text, in_reasoning, tools)
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in answer.tool_calls] == whole[2]
