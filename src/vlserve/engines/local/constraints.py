"""Constrained decoding for the local engine, with xgrammar (the grammar engine LMDeploy
and vLLM use): the answer follows the grammar by construction, token by token.

- `response_format` `json_object` / `json_schema`: the answer is JSON (valid against the
  schema; `maxLength`, `enum`, `pattern` and the rest are honoured).
- `tool_choice` `required` or a named function: the answer is one call, in Qwen's
  `<tool_call>` format, to one of the tools (or the named one), its arguments valid
  against the tool's parameters.
- For a Thinking model whose prompt opened `<think>`, the reasoning is free text and the
  constraint applies to what follows `</think>`.

A schema xgrammar cannot compile is a 400 naming the field.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from vlserve.engines.answer import THINK_CLOSE, TOOL_CLOSE, TOOL_OPEN
from vlserve.errors import ErrorKind, ServiceError
from vlserve.openai_types import EngineBody, JSONObject, Tool


def _bad(param: str, message: str) -> ServiceError:
    return ServiceError(ErrorKind.BAD_REQUEST, message, param=param)


def chosen_tools(body: EngineBody) -> tuple[str, list[Tool]]:
    """("none" | "auto" | "required", the tools the answer may call), checked."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or ("auto" if tools else "none")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        named = [t for t in tools if (t.get("function") or {}).get("name") == name]
        if choice.get("type") != "function" or not named:
            raise _bad("tool_choice", f"tool_choice names the function {name!r}, which is not in `tools`.")
        return "required", named
    if choice not in ("none", "auto", "required"):
        raise _bad("tool_choice", f"tool_choice {choice!r} is not one of none, auto, required or a function.")
    if choice == "required" and not tools:
        raise _bad("tool_choice", "tool_choice=required needs at least one tool in `tools`.")
    return choice, tools if choice != "none" else []


def _json_format(body: EngineBody) -> JSONObject | None:
    """The schema `response_format` asks for, or None for free text."""
    fmt = body.get("response_format")
    if not fmt:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise _bad("response_format", "response_format json_schema needs `json_schema.schema`, a JSON Schema.")
        return schema
    raise _bad("response_format", f"response_format type {kind!r} is not one of text, json_object, json_schema.")


class Constrainer:
    """Builds a fresh logits processor per request; compiled grammars are cached by xgrammar.

    `stop_token_ids` are every token that ends a generation (the generation config lists
    more than the tokenizer's eos: Qwen's <|endoftext|> beside <|im_end|>). xgrammar must
    know them all: one it does not know is ordinary text to it, allowed inside a JSON
    string, and sampling it there ended the answer with `stop` in the middle of a string.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._stop_token_ids = stop_token_ids
        self._compiler: Any = None
        self._lock = threading.Lock()

    def _grammar_compiler(self) -> Any:
        with self._lock:
            if self._compiler is None:
                import xgrammar as xgr

                info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self._vocab_size,
                                                          stop_token_ids=self._stop_token_ids or None)
                self._compiler = xgr.GrammarCompiler(info)
            return self._compiler

    def grammar(self, body: EngineBody, in_reasoning: bool) -> Any | None:
        """The compiled constraint for this request (None: unconstrained). Compiled once
        per request; each choice generated under it needs its own `processor()`."""
        choice, tools = chosen_tools(body)
        schema = _json_format(body)
        if choice != "required" and schema is None:
            return None
        from xgrammar import structural_tag as st

        answer: st.Format
        if schema is not None and choice != "required":
            answer = st.JSONSchemaFormat(json_schema=grammar_schema(schema), max_whitespace_cnt=2)
            param = "response_format"
        else:
            answer = st.OrFormat(elements=[_call_format(tool) for tool in tools]) if len(tools) > 1 \
                else _call_format(tools[0])
            param = "tools"
        if in_reasoning:  # free reasoning first, then the constrained answer
            answer = st.SequenceFormat(elements=[
                st.TagFormat(begin="", content=st.AnyTextFormat(), end=THINK_CLOSE),
                st.ConstStringFormat(value="\n\n"), answer])
        try:
            return self._grammar_compiler().compile_structural_tag(st.StructuralTag(format=answer))
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError with the reason
            raise _bad(param, f"The schema in `{param}` cannot be used to constrain the answer: "
                       f"{str(exc).splitlines()[-1][:300]}") from None


def processor(grammar: Any) -> Any:
    """A logits processor for one generation under `grammar` (xgrammar's hold the
    matcher's state, so one serves one sequence only)."""
    from xgrammar.contrib.hf import LogitsProcessor

    return LogitsProcessor(grammar)


def _call_format(tool: Tool) -> Any:
    from xgrammar import structural_tag as st

    function = tool.get("function") or {}
    parameters = function.get("parameters") or {"type": "object"}
    return st.TagFormat(begin=f'{TOOL_OPEN}\n{{"name": {json.dumps(function.get("name"))}, "arguments": ',
                        content=st.JSONSchemaFormat(json_schema=grammar_schema(parameters), max_whitespace_cnt=2),
                        end=f"}}\n{TOOL_CLOSE}")


# A string of bounded length, as a pattern over whole characters: printable ASCII but the
# quote and the backslash, and the rest of the Basic Multilingual Plane. (A negated class
# such as [^"] is compiled byte by byte and lets invalid UTF-8 through, whose replacement
# characters then break the length.)
_BOUNDED_STRING = '^(?:[ !#-\\[\\]-~]|[\\u00a0-\\ud7ff\\ue000-\\uffff]){%d,%s}$'
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


def grammar_schema(schema: JSONObject) -> JSONObject:
    """The schema as it is compiled into a grammar (the answer is still validated against
    the client's own). xgrammar 0.2.9 compiles a string with minLength or maxLength into a
    rule that allows raw control characters (which strict JSON forbids) and no escapes.
    So such a string becomes the equivalent pattern, with quotes, backslashes and
    characters beyond the Basic Multilingual Plane left out rather than escaped."""
    out = dict(schema)
    if _is_bounded_string(out):
        low, high = out.pop("minLength", 0), out.pop("maxLength", None)
        out["pattern"] = _BOUNDED_STRING % (int(low), "" if high is None else int(high))
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [grammar_schema(s) if isinstance(s, dict) else s for s in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: grammar_schema(s) if isinstance(s, dict) else s for k, s in out[key].items()}
    for key in ("items", "additionalProperties", "not", "contains"):
        if isinstance(out.get(key), dict):
            out[key] = grammar_schema(out[key])
    return out


def _is_bounded_string(schema: JSONObject) -> bool:
    """A string bounded by lengths that are counts (anything else is left for xgrammar to
    refuse, which is the client's 400 naming the field)."""
    bounds = [schema[key] for key in ("minLength", "maxLength") if key in schema]
    return schema.get("type") == "string" and bool(bounds) \
        and all(isinstance(bound, int) and not isinstance(bound, bool) and bound >= 0 for bound in bounds) \
        and not any(key in schema for key in ("pattern", "format", "enum", "const"))
