"""Settings: one pydantic-settings class, read from the environment, overridden by CLI flags.

Every field's alias is the environment variable that sets it (the origin design's names
are kept). The README's settings table lists the same names; `tests/unit/test_config.py`
checks that the two agree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024

CommaList = Annotated[list[str], NoDecode]


def _data_dir() -> Path:
    """Where what must survive a restart lives ($XDG_DATA_HOME/vlserve)."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "vlserve"


class SettingsError(ValueError):
    """A setting has a bad value; the message is one line that names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", case_sensitive=False)

    # --- which engine, which model -------------------------------------------------
    engine: Literal["auto", "upstream", "local"] = Field("auto", alias="VLSERVE_ENGINE")
    model_path: str | None = Field(None, alias="MODEL_PATH")
    served_model_name: str | None = Field(None, alias="SERVED_MODEL_NAME")
    tensor_parallel_size: int = Field(1, ge=1, alias="TENSOR_PARALLEL_SIZE")
    max_model_len: int = Field(8192, ge=64, alias="MAX_MODEL_LEN")

    # --- upstream (LMDeploy or any OpenAI-compatible server) ------------------------
    # Named for every upstream (LMDeploy, vLLM, SGLang); the origin design's LMDEPLOY_*
    # names are still read.
    upstream_base_url: CommaList = Field(default_factory=list, alias="UPSTREAM_BASE_URL",
                                         validation_alias=AliasChoices("UPSTREAM_BASE_URL", "LMDEPLOY_BASE_URL"))
    upstream_timeout_s: float = Field(600.0, gt=0, alias="UPSTREAM_TIMEOUT_S",
                                      validation_alias=AliasChoices("UPSTREAM_TIMEOUT_S", "LMDEPLOY_TIMEOUT_S"))
    upstream_connect_timeout_s: float = Field(5.0, gt=0, alias="UPSTREAM_CONNECT_TIMEOUT_S")
    upstream_first_byte_timeout_s: float = Field(300.0, gt=0, alias="UPSTREAM_FIRST_BYTE_TIMEOUT_S")
    upstream_idle_timeout_s: float = Field(120.0, gt=0, alias="UPSTREAM_IDLE_TIMEOUT_S")
    upstream_max_connections: int = Field(256, ge=1, alias="UPSTREAM_MAX_CONNECTIONS")
    lmdeploy_executor_backend: str = Field("mp", alias="LMDEPLOY_EXECUTOR_BACKEND")
    lmdeploy_skip_warmup: bool = Field(True, alias="LMDEPLOY_SKIP_WARMUP")
    lmdeploy_enable_check_env: bool = Field(False, alias="LMDEPLOY_ENABLE_CHECK_ENV")

    # --- `vlserve launch`: the engine child process ------------------------------------
    engine_command: str | None = Field(None, alias="ENGINE_COMMAND")
    engine_port: int = Field(23333, ge=1, le=65535, alias="ENGINE_PORT")
    engine_startup_timeout_s: float = Field(1800.0, gt=0, alias="ENGINE_STARTUP_TIMEOUT_S")
    engine_stop_timeout_s: float = Field(30.0, gt=0, alias="ENGINE_STOP_TIMEOUT_S")
    engine_restart: bool = Field(False, alias="ENGINE_RESTART")
    engine_max_restarts: int = Field(5, ge=0, alias="ENGINE_MAX_RESTARTS")
    lmdeploy_extra_args: str = Field("", alias="LMDEPLOY_EXTRA_ARGS")
    lmdeploy_metrics: bool = Field(False, alias="LMDEPLOY_METRICS")
    lmdeploy_cache_max_entry_count: float | None = Field(None, gt=0, le=1, alias="LMDEPLOY_CACHE_MAX_ENTRY_COUNT")
    lmdeploy_max_batch_size: int | None = Field(None, ge=1, alias="LMDEPLOY_MAX_BATCH_SIZE")
    lmdeploy_tool_call_parser: str = Field("auto", min_length=1, alias="LMDEPLOY_TOOL_CALL_PARSER")
    lmdeploy_reasoning_parser: str = Field("auto", min_length=1, alias="LMDEPLOY_REASONING_PARSER")
    drain_timeout_s: float = Field(30.0, ge=0, alias="DRAIN_TIMEOUT_S")

    # --- sampling defaults (fill only what a client leaves out) ---------------------
    # Qwen3-VL-Instruct's recommended sampling.
    max_tokens: int = Field(1024, ge=1, alias="MAX_TOKENS")
    temperature: float = Field(0.7, ge=0, le=2, alias="TEMPERATURE")
    top_p: float = Field(0.8, gt=0, le=1, alias="TOP_P")
    top_k: int = Field(20, ge=0, alias="TOP_K")
    reasoning: Literal["keep", "drop"] = Field("keep", alias="REASONING")

    # --- HTTP server ------------------------------------------------------------------
    host: str = Field("127.0.0.1", alias="HOST")
    port: int = Field(8000, ge=1, le=65535, alias="PORT")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="LOG_LEVEL")
    access_log: bool = Field(True, alias="ACCESS_LOG")
    max_request_bytes: int = Field(64 * MiB, ge=1024, alias="MAX_REQUEST_BYTES")
    http_max_header_bytes: int = Field(64 * 1024, ge=1024, alias="HTTP_MAX_HEADER_BYTES")
    http_header_timeout_s: float = Field(10.0, gt=0, alias="HTTP_HEADER_TIMEOUT_S")
    http_body_timeout_s: float = Field(60.0, gt=0, alias="HTTP_BODY_TIMEOUT_S")
    http_idle_timeout_s: float = Field(5.0, gt=0, alias="HTTP_IDLE_TIMEOUT_S")
    http_write_timeout_s: float = Field(60.0, gt=0, alias="HTTP_WRITE_TIMEOUT_S")
    http_body_min_rate: int = Field(500, ge=0, alias="HTTP_BODY_MIN_RATE")
    http_body_grace_s: float = Field(10.0, gt=0, alias="HTTP_BODY_GRACE_S")
    http_max_connections: int = Field(1024, ge=16, alias="HTTP_MAX_CONNECTIONS")
    http_ops_connections: int = Field(16, ge=0, alias="HTTP_OPS_CONNECTIONS")

    # --- access and admission ---------------------------------------------------------
    api_keys: CommaList = Field(default_factory=list, alias="API_KEYS", repr=False)
    api_keys_file: Path | None = Field(None, alias="API_KEYS_FILE")
    auth_open_ops: bool = Field(True, alias="AUTH_OPEN_OPS")
    cors_allow_origins: CommaList = Field(default_factory=list, alias="CORS_ALLOW_ORIGINS")
    max_concurrent_requests: int = Field(64, ge=1, alias="MAX_CONCURRENT_REQUESTS")
    max_queued_requests: int = Field(256, ge=0, alias="MAX_QUEUED_REQUESTS")
    queue_timeout_s: float = Field(30.0, gt=0, alias="QUEUE_TIMEOUT_S")

    # --- keys' limits and usage (tenancy/) ---------------------------------------------
    redis_url: str | None = Field(None, alias="REDIS_URL", repr=False)
    redis_timeout_s: float = Field(0.5, gt=0, alias="REDIS_TIMEOUT_S")
    limits_on_store_error: Literal["open", "closed"] = Field("open", alias="LIMITS_ON_STORE_ERROR")
    usage_file: Path | None = Field(default_factory=lambda: _data_dir() / "usage.sqlite3", alias="USAGE_FILE")

    # --- LocalEngine --------------------------------------------------------------------
    local_device: Literal["auto", "cpu", "cuda"] = Field("auto", alias="LOCAL_DEVICE")
    local_threads: int | None = Field(None, ge=1, alias="LOCAL_THREADS")
    local_max_queue: int = Field(32, ge=1, alias="LOCAL_MAX_QUEUE")
    cache_dir: Path = Field(Path.home() / ".cache" / "vlserve", alias="VLSERVE_CACHE_DIR")

    # --- media (images and video) ---------------------------------------------------
    media_max_image_bytes: int = Field(20 * MiB, ge=1024, alias="MEDIA_MAX_IMAGE_BYTES")
    media_max_video_bytes: int = Field(40 * MiB, ge=1024, alias="MEDIA_MAX_VIDEO_BYTES")
    media_max_total_bytes: int = Field(48 * MiB, ge=1024, alias="MEDIA_MAX_TOTAL_BYTES")
    media_max_images: int = Field(8, ge=1, alias="MEDIA_MAX_IMAGES")
    media_max_pixels: int = Field(80_000_000, ge=1024, alias="MEDIA_MAX_PIXELS")
    media_max_pdf_bytes: int = Field(32 * MiB, ge=1024, alias="MEDIA_MAX_PDF_BYTES")
    media_max_pdf_pages: int = Field(64, ge=1, alias="MEDIA_MAX_PDF_PAGES")
    media_pdf_workers: int = Field(2, ge=1, alias="MEDIA_PDF_WORKERS")
    media_pdf_render_timeout_s: float = Field(60.0, gt=0, alias="MEDIA_PDF_RENDER_TIMEOUT_S")
    media_pdf_worker_memory_bytes: int = Field(1024 * MiB, ge=64 * MiB, alias="MEDIA_PDF_WORKER_MEMORY_BYTES")
    media_pdf_pages_in_flight: int = Field(16, ge=1, alias="MEDIA_PDF_PAGES_IN_FLIGHT")
    media_decode_memory_bytes: int = Field(512 * MiB, ge=16 * MiB, alias="MEDIA_DECODE_MEMORY_BYTES")
    media_allow_remote: bool = Field(True, alias="MEDIA_ALLOW_REMOTE")
    media_fetch_timeout_s: float = Field(10.0, gt=0, alias="MEDIA_FETCH_TIMEOUT_S")
    media_max_redirects: int = Field(3, ge=0, alias="MEDIA_MAX_REDIRECTS")
    media_allow_private_hosts: CommaList = Field(default_factory=list, alias="MEDIA_ALLOW_PRIVATE_HOSTS")
    media_allowed_domains: CommaList = Field(default_factory=list, alias="MEDIA_ALLOWED_DOMAINS")
    media_denied_domains: CommaList = Field(default_factory=list, alias="MEDIA_DENIED_DOMAINS")
    allowed_local_media_path: Path | None = Field(None, alias="ALLOWED_LOCAL_MEDIA_PATH")
    # The pixel budget per image, in Qwen3-VL's terms: 32 = patch 16 x merge 2, and
    # 1280 visual tokens x 32 x 32 pixels. Qwen's shipped default (~16.7 MP, ~16K
    # tokens per image) is the top cause of out-of-memory on 24 GB cards.
    media_downscale: bool = Field(True, alias="MEDIA_DOWNSCALE")
    media_cache_bytes: int = Field(256 * MiB, ge=0, alias="MEDIA_CACHE_BYTES")
    media_retry_smaller: bool = Field(True, alias="MEDIA_RETRY_SMALLER")
    media_image_factor: int = Field(32, ge=1, alias="MEDIA_IMAGE_FACTOR")
    media_image_min_pixels: int = Field(65_536, ge=1, alias="MEDIA_IMAGE_MIN_PIXELS")
    media_image_max_pixels: int = Field(1280 * 32 * 32, ge=1024, alias="MEDIA_IMAGE_MAX_PIXELS")
    upstream_mm_kwargs: Literal["lmdeploy", "flat", "off"] = Field("lmdeploy", alias="UPSTREAM_MM_KWARGS")
    upstream_guided_decoding: bool = Field(True, alias="UPSTREAM_GUIDED_DECODING")
    upstream_image_uuids: Literal["auto", "on", "off"] = Field("auto", alias="UPSTREAM_IMAGE_UUIDS")

    @field_validator("upstream_base_url", "media_allow_private_hosts", "media_allowed_domains",
                     "media_denied_domains", "api_keys", "cors_allow_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        # A browser sends `scheme://host[:port]`, never a path: "https://a.example/" would
        # silently match nothing.
        out = []
        for origin in origins:
            origin = origin.rstrip("/")
            if origin != "*" and not re.fullmatch(r"https?://[^/?#\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port] (or * for any)")
            out.append(origin)
        return out

    @field_validator("upstream_base_url")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return [url.rstrip("/") for url in urls]

    @field_validator("api_keys_file")
    @classmethod
    def _check_keys_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{str(path)!r} is not a readable file")
        return path

    def all_api_keys(self) -> list[str]:
        """The keys known in clear: API_KEYS plus one key per line of a plain API_KEYS_FILE
        (blank lines and # comments skipped). A `.toml` file's keys are read by
        tenancy/keys.py, with their names and limits."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None and not self.api_keys_file.name.endswith(".toml"):
            lines = (line.strip() for line in self.api_keys_file.read_text().splitlines())
            keys += [line for line in lines if line and not line.startswith("#")]
        return keys

    @field_validator("usage_file", mode="before")
    @classmethod
    def _usage_off(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("", "off", "none") else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^(redis|rediss|unix)://", url):
            raise ValueError("not a Redis URL: write redis://host:6379/0 (rediss:// for TLS, unix:// for a socket)")
        return url or None

    @field_validator("allowed_local_media_path")
    @classmethod
    def _check_media_dir(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_dir():
            raise ValueError(f"{str(path)!r} is not a directory")
        return path.resolve() if path is not None else None

    @model_validator(mode="after")
    def _check_engine(self) -> Settings:
        if self.engine == "upstream" and not self.upstream_base_url:
            raise ValueError("VLSERVE_ENGINE=upstream needs UPSTREAM_BASE_URL")
        if self.media_image_min_pixels > self.media_image_max_pixels:
            raise ValueError("MEDIA_IMAGE_MIN_PIXELS is larger than MEDIA_IMAGE_MAX_PIXELS")
        return self

    @property
    def engine_kind(self) -> Literal["upstream", "local"]:
        """`auto` means upstream when an upstream URL is configured, else local."""
        if self.engine == "auto":
            return "upstream" if self.upstream_base_url else "local"
        return self.engine

    @classmethod
    def env_names(cls) -> list[str]:
        return [field.alias for field in cls.model_fields.values() if field.alias]


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_local_model(settings: Settings) -> None:
    """MODEL_PATH for the local engine must be a model folder or a hub id; anything else
    would only show later as a 503 that never ends. Raises SettingsError (one line)."""
    value = settings.model_path
    if not value:
        return  # the built-in tiny model
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SettingsError(f"invalid setting MODEL_PATH={value!r}: the folder has no config.json, so it is "
                                "not a model checkpoint (a Hugging Face model folder has config.json and weights)")
        return
    if path.exists():
        raise SettingsError(f"invalid setting MODEL_PATH={value!r}: a file, not a model folder")
    if not HUB_ID.fullmatch(value):
        raise SettingsError(f"invalid setting MODEL_PATH={value!r}: no such folder, and not a hub id such as "
                            "Qwen/Qwen3-VL-8B-Instruct")


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; `overrides` (CLI flags) win.

    Raises SettingsError with one line naming the offending variable.
    """
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    loc = error.get("loc") or ()
    field = str(loc[0]) if loc else ""
    info = Settings.model_fields.get(field) or next(
        (info for info in Settings.model_fields.values() if info.alias == field), None)
    name = _variable_name(info) if info else field.upper()
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    if not name:  # a whole-model check: its message already names the variables
        return f"invalid settings: {message}"
    value = error.get("input")
    shown = f"={value!r}" if isinstance(value, (str, int, float)) else ""
    return f"invalid setting {name}{shown}: {message}"


def _variable_name(info: FieldInfo) -> str:
    """The environment variable a person set for this field: an old name when they used it."""
    if isinstance(info.validation_alias, AliasChoices):
        names = [str(choice) for choice in info.validation_alias.choices]
        return next((name for name in names if name in os.environ), names[0])
    return info.alias or ""
