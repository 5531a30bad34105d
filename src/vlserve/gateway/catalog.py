"""Which model ids the gateway advertises, and which engine id each one means."""

from __future__ import annotations

from vlserve.config import Settings
from vlserve.engines.base import Engine, EngineStatus
from vlserve.errors import ErrorKind, ServiceError


class ModelCatalog:
    """The engine's own ids, plus SERVED_MODEL_NAME as an alias of the first one.

    Upstreams insist on their exact `--model-name`; clients may use the alias and the
    gateway rewrites `model` before forwarding.
    """

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._alias = settings.served_model_name
        self._engine = engine
        self._configured_context = settings.max_model_len

    def context_length(self) -> int:
        """The context the engine enforces: what requests are checked against, and what
        /health reports (the model's own limit when it is below MAX_MODEL_LEN)."""
        return self._engine.status().max_model_len or self._configured_context

    def _ready_status(self) -> EngineStatus:
        status = self._engine.status()
        if not status.ready:
            raise ServiceError(ErrorKind.ENGINE_UNAVAILABLE, f"The engine is not ready: {status.detail}.",
                               headers={"Retry-After": "5"})
        return status

    def engine_models(self) -> list[str]:
        return self._ready_status().models

    def target(self, requested: str | None) -> tuple[str, int]:
        """The engine's id for `requested` and the context it enforces, from one status
        snapshot (a request needs both)."""
        status = self._ready_status()
        return self._resolve(requested, status.models), status.max_model_len or self._configured_context

    def advertised(self) -> list[str]:
        models = self.engine_models()
        if self._alias and self._alias not in models:
            return [self._alias, *models]
        return models

    def aliases(self) -> dict[str, str]:
        """Each name that is not an engine id -> the engine id it means."""
        models = self._engine.status().models
        return {self._alias: models[0]} if self._alias and models and self._alias not in models else {}

    def _resolve(self, requested: str | None, models: list[str]) -> str:
        if requested is None or requested in models:
            return requested or models[0]
        if requested == self._alias:
            return models[0]
        raise ServiceError(ErrorKind.MODEL_NOT_FOUND, f"The model {requested!r} does not exist here; "
                           f"available: {', '.join(self.advertised())}.", param="model")
