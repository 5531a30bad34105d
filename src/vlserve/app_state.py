"""What a running app holds; built by the lifespan, reached by routes through routes/deps.py."""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import ModelCatalog
from .config import Settings
from .engine_requests import RequestBuilder
from .gpu import GpuMonitor
from .inference import Inference
from .observability import Metrics


@dataclass
class AppState:
    settings: Settings
    inference: Inference      # the one path to the engine
    requests: RequestBuilder  # the one builder of engine requests
    catalog: ModelCatalog
    gpu: GpuMonitor
    metrics: Metrics
