"""What a running app holds; built by the lifespan, reached by routes through routes/deps.py."""

from __future__ import annotations

from dataclasses import dataclass

from vlserve.config import Settings
from vlserve.gateway.catalog import ModelCatalog
from vlserve.gateway.engine_call import Inference
from vlserve.gateway.request_builder import RequestBuilder
from vlserve.server.gpu import GpuMonitor
from vlserve.server.observability import Metrics
from vlserve.tenancy.keys import KeySource
from vlserve.tenancy.quota import Quota


@dataclass
class AppState:
    settings: Settings
    inference: Inference      # the one path to the engine
    requests: RequestBuilder  # the one builder of engine requests
    catalog: ModelCatalog
    gpu: GpuMonitor
    metrics: Metrics
    keys: KeySource           # the key ring in force (reloaded on SIGHUP or a changed file)
    quota: Quota              # keys' limits and usage
