"""JSON bodies read and validated in one pass by pydantic-core, for the hot routes.

A FastAPI body parameter parses the JSON with `json.loads`, then validates the Python
objects, then solves a dependency for it; `model_validate_json` does the parse and the
validation in one pass in Rust, on the bytes read straight from ASGI's `receive`. Errors
are raised as FastAPI's own RequestValidationError, so they render exactly as a declared
body's would (server/error_handlers.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.types import Receive

from vlserve.gateway.engine_call import ClientGone

Model = TypeVar("Model", bound=BaseModel)


async def read_body(receive: Receive, model: type[Model]) -> Model:
    """The request's JSON body as `model`; a client that leaves while sending it is ClientGone
    (a 499 in the request log, not an unhandled error)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    try:
        return model.model_validate_json(b"".join(chunks))
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None


_COMPONENTS = "#/components/schemas/"


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `requestBody` a declared body parameter of `model` would have (the
    schema itself is added to the document by `document_bodies`)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"{_COMPONENTS}{model.__name__}"}}}}}


def document_bodies(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add the schemas of bodies read with `read_body` to the app's OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template=_COMPONENTS + "{model}")
                for name, definition in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, definition)
                schemas[model.__name__] = schema
            app.openapi_schema = document  # built once, like FastAPI's own
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
