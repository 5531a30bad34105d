"""The services a running app holds; built by the lifespan, reached by routes through deps."""

from __future__ import annotations

from dataclasses import dataclass

from .admission import Admission
from .catalog import ModelCatalog
from .config import Settings
from .engines.base import Engine
from .gpu import GpuMonitor
from .media import MediaNormalizer
from .observability import Metrics
from .serving import OpenStreams


@dataclass
class Services:
    settings: Settings
    engine: Engine
    catalog: ModelCatalog
    media: MediaNormalizer
    gpu: GpuMonitor
    admission: Admission
    metrics: Metrics
    streams: OpenStreams
