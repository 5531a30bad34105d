"""Usage for administrators: GET /admin/usage, as JSON rows or CSV."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from vlserve.errors import ErrorKind, ServiceError
from vlserve.server.state import AppState
from vlserve.tenancy.quota import ANONYMOUS_CALLER, Caller
from vlserve.tenancy.usage import as_csv, as_json_rows

router = APIRouter(tags=["Administration"])
MAX_DAYS = 366


def _day(value: str | None, name: str) -> date:
    if value is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ServiceError(ErrorKind.BAD_REQUEST, f"{name} must be a day as YYYY-MM-DD, not {value!r}.",
                           param=name) from None


@router.get("/admin/usage", response_model=None)
async def usage(request: Request, start: Annotated[str | None, Query(description="YYYY-MM-DD (UTC); "
                                                                     "default today")] = None,
                end: Annotated[str | None, Query(description="YYYY-MM-DD (UTC), included; default today")] = None,
                ) -> Response:
    """Requests, tokens, images and errors per key, user, model and UTC day (admin keys only;
    open to all when the server has no keys). `Accept: text/csv` for CSV."""
    state: AppState = request.app.state.vlserve
    caller: Caller = request.scope.get("state", {}).get("caller", ANONYMOUS_CALLER)
    if state.keys.ring.required and not caller.key.admin:
        raise ServiceError(ErrorKind.FORBIDDEN, f"The key {caller.key.name!r} is not an admin key; usage is "
                           "shown to keys with `admin = true` in API_KEYS_FILE.")
    first, last = _day(start, "start"), _day(end, "end")
    if first > last or (last - first).days >= MAX_DAYS:
        raise ServiceError(ErrorKind.BAD_REQUEST, f"start must be on or before end, at most {MAX_DAYS} days apart.",
                           param="start")
    rows = as_json_rows(await state.quota.usage(first, last))
    if "text/csv" in request.headers.get("accept", ""):
        return Response(as_csv(rows), media_type="text/csv")
    return JSONResponse(rows)
