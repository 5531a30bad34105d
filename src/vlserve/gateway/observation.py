"""What one request's log line and metrics will say; routes and the engine-call path fill it in.

Plain data, no framework: the Observe middleware (observability.py) creates one per
request, is the one layer that sees the response's messages (it notes the status and adds
the headers), and reads it when the response is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vlserve.openai_types import Usage


@dataclass
class Observation:
    request_id: str
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    images_shrunk: float | None = None  # the share of pixels the images kept on a retry smaller
    client_left: bool = False  # the client went away before the answer was over (logged as 499)
    extra: dict[str, str | int | None] = field(default_factory=dict)  # route-specific fields of the log line
    status: int = 500  # the status the response started with (500 until then)
    started: bool = False  # the response has started: an error now can only drop the connection
    # Headers added to the response as it starts, made then: a key's x-ratelimit-*
    # (server/limits.py) are known only once its checks have run.
    more_headers: Callable[[], list[tuple[bytes, bytes]]] | None = None

    def add_usage(self, usage: Usage | None) -> None:
        if usage is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + usage["prompt_tokens"]
            self.completion_tokens = (self.completion_tokens or 0) + usage["completion_tokens"]
