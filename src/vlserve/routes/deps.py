"""Typed dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..app_state import Services
from ..observability import Observation


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_observation(request: Request) -> Observation:
    """What the request's log line and metrics will say (set up by the Observe middleware)."""
    state = request.scope.setdefault("state", {})
    return state.setdefault("observation", Observation("-"))


ServicesDep = Annotated[Services, Depends(get_services)]
ObservationDep = Annotated[Observation, Depends(get_observation)]
