"""Structured extraction: a JSON object that validates against the caller's JSON Schema.

The schema travels to the engine as a hint (`EngineRequest.json_schema`): engines with
guided decoding (LMDeploy, vLLM) are sent it as OpenAI's `response_format` so they can
only produce valid JSON. Whatever comes back is still
validated here; if it fails, the model gets one chance to repair its answer, and then
the caller gets a 422 with the raw text.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from ..errors import ErrorKind, ServiceError
from .jsontext import find_json

MAX_SCHEMA_BYTES = 64 * 1024


def check_schema(schema: Any) -> dict[str, Any]:
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
    return schema


def schema_prompt(base: str, schema: dict[str, Any]) -> str:
    return base + json.dumps(schema, ensure_ascii=False)


def validate(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """(value, None) when `text` holds JSON valid against `schema`, else (None, why not)."""
    value = find_json(text)
    if value is None:
        return None, "the answer contains no JSON"
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        return None, f"at {where}: {error.message}"
    return value, None


def repair_message(problem: str) -> str:
    return (f"That answer is not valid against the schema ({problem}). Reply with only the corrected "
            "JSON object.")


def extraction_failed(problem: str, text: str) -> ServiceError:
    return ServiceError(ErrorKind.VALIDATION, f"The model's answer did not validate against the schema "
                        f"after one repair attempt ({problem}).", param="schema", extra={"raw_output": text})
