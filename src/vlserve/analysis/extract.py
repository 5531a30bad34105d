"""Structured extraction: a JSON object that validates against the caller's JSON Schema.

The schema travels to the engine as a hint (`EngineRequest.json_schema`): engines with
guided decoding (LMDeploy, vLLM) are sent it as OpenAI's `response_format` so they can
only produce valid JSON. Whatever comes back is still
validated here; if it fails, the model gets one chance to repair its answer, and then
the caller gets a 422 with the raw text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import jsonschema_rs
import referencing.jsonschema
from referencing import Registry
from referencing.exceptions import Unresolvable

from vlserve.analysis.jsontext import find_json
from vlserve.errors import ErrorKind, ServiceError

# A JSON Schema, handed to the validators as it is (they check it: check_schema).
JSONSchema = dict[str, Any]

MAX_SCHEMA_BYTES = 64 * 1024
# Schemas are resolved against nothing but themselves: jsonschema would otherwise fetch a
# `$ref` to a URL (with urllib, past the media policy) and quote what it found in errors.
NOTHING_OUTSIDE = Registry()


def _validator(schema: JSONSchema) -> Any:
    """Answers are validated with jsonschema-rs: offline, and its regex engine runs in linear
    time, so a client's `pattern` like `^(a+)+$` can't stall the process (Python's `re`
    would backtrack for minutes while holding the GIL)."""
    try:
        return jsonschema_rs.validator_for(schema, offline=True, pattern_options=jsonschema_rs.RegexOptions())
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        message = str(exc).splitlines()[0][:300]
        raise ServiceError(ErrorKind.BAD_REQUEST, f"`schema` cannot be used: {message}", param="schema") from None


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _check_refs(schema: JSONSchema) -> None:
    """Every `$ref` must point inside the schema (400 naming the first that does not)."""
    spec = referencing.jsonschema.specification_with(
        str(schema.get("$schema", "")), default=referencing.jsonschema.DRAFT202012)
    root = spec.create_resource(schema)
    base = root.id() or ""
    resolver = NOTHING_OUTSIDE.with_resource(base, root).crawl().resolver(base_uri=base)
    for ref in _refs(schema):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise ServiceError(ErrorKind.BAD_REQUEST, f"`schema` refers to {ref!r}, which is not defined inside "
                               "it; references are only resolved within the schema itself.",
                               param="schema") from None


def check_schema(schema: object) -> JSONSchema:
    try:
        return _checked(schema)
    except RecursionError:
        raise ServiceError(ErrorKind.BAD_REQUEST, "`schema` is nested too deeply.", param="schema") from None


def _checked(schema: object) -> JSONSchema:
    if not isinstance(schema, dict) or not schema:
        raise ServiceError(ErrorKind.BAD_REQUEST, "task=extract needs a JSON Schema object in `schema`.",
                           param="schema")
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise ServiceError(ErrorKind.TOO_LARGE, f"The schema is larger than {MAX_SCHEMA_BYTES:,} bytes.")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ServiceError(ErrorKind.BAD_REQUEST, f"`schema` is not a valid JSON Schema: {exc.message}",
                           param="schema") from None
    _check_refs(schema)
    _validator(schema)  # patterns and references it cannot use are a 400 now, before any generation
    return schema


def schema_prompt(base: str, schema: JSONSchema) -> str:
    return base + json.dumps(schema, ensure_ascii=False)


def validate(text: str, schema: JSONSchema) -> tuple[object, str | None]:
    """(value, None) when `text` holds JSON valid against `schema`, else (None, why not)."""
    value = find_json(text)
    if value is None:
        return None, "the answer contains no JSON"
    try:
        error = next(iter(_validator(schema).iter_errors(value)), None)
    except (jsonschema_rs.ReferencingError, ValueError) as exc:  # checked up front; nested $ids may still fail
        raise ServiceError(ErrorKind.BAD_REQUEST, f"`schema` has a reference that does not resolve inside it "
                           f"({str(exc)[:200]}).", param="schema") from None
    if error is not None:
        where = "/".join(str(p) for p in error.instance_path) or "the top level"
        return None, f"at {where}: {error.message}"
    return value, None


def repair_message(problem: str) -> str:
    return (f"That answer is not valid against the schema ({problem}). Reply with only the corrected "
            "JSON object.")


def extraction_failed(problem: str, text: str) -> ServiceError:
    return ServiceError(ErrorKind.VALIDATION, f"The model's answer did not validate against the schema "
                        f"after one repair attempt ({problem}).", param="schema", extra={"raw_output": text})
