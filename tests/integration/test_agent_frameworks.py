"""Agent frameworks' structured output, unchanged, against the tiny random model.

They work because decoding is constrained: instructor's TOOLS mode and langchain's
function-calling method force a tool call; instructor's JSON_SCHEMA mode and langchain's
json_schema method send response_format. Either way the answer validates by
construction, on the local gateway and through the upstream gateway.
"""

from __future__ import annotations

from typing import Literal

import instructor
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from .test_openai_api import MODEL


class Invoice(BaseModel):
    currency: Literal["EUR", "USD", "GBP"]
    total: int = Field(ge=0, le=9999)
    paid: bool


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
def test_instructor(gateway, mode):
    client = instructor.from_openai(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0,
                                                  timeout=120), mode=mode)
    invoice = client.chat.completions.create(model=MODEL, response_model=Invoice, max_retries=0, max_tokens=200,
                                             messages=[{"role": "user", "content": "Extract the invoice."}])
    assert isinstance(invoice, Invoice)


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_langchain_with_structured_output(gateway, method):
    llm = ChatOpenAI(model=MODEL, base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=120,
                     max_tokens=200)
    invoice = llm.with_structured_output(Invoice, method=method).invoke("Extract the invoice.")
    assert isinstance(invoice, Invoice)
