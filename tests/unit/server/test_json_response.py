"""A whole answer's response: orjson's bytes, with exactly the headers Starlette's own JSON
response would send (the usual case makes them directly)."""

from __future__ import annotations

import pytest
from starlette.responses import JSONResponse

from vlserve.server.routes.streaming import JSONBytesResponse

ANSWER = {"id": "chatcmpl-1", "choices": [{"message": {"content": "héllo"}}], "usage": None}


@pytest.mark.parametrize("status, headers", [(200, None), (400, None), (204, None), (200, {"Retry-After": "5"}),
                                             (200, {"Content-Type": "application/problem+json"})])
def test_headers_are_starlettes(status, headers):
    ours = JSONBytesResponse(ANSWER, status_code=status, headers=headers)
    theirs = JSONResponse(ANSWER, status_code=status, headers=headers)
    theirs.body = ours.body  # the same bytes; only how they are written differs
    theirs.init_headers(headers)
    assert ours.raw_headers == theirs.raw_headers
