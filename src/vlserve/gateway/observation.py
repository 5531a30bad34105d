"""What one request's log line and metrics will say; routes and the engine-call path fill it in.

Plain data, no framework: the Observe middleware (observability.py) creates one per
request and reads it when the response is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Observation:
    request_id: str
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = (self.prompt_tokens or 0) + int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = (self.completion_tokens or 0) + int(usage.get("completion_tokens") or 0)
