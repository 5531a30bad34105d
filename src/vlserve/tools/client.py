"""A small typed client for vlserve, built on the official openai SDK (and httpx for
the simple endpoints). Used by the CLI and the origin design's test scripts.

Failures become `ClientError`, whose message is one line a person can act on: which
server could not be reached, that it wants an API key, that the URL is not a vlserve.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
from openai import OpenAI
from openai.types.chat import ChatCompletionChunk
from PIL import Image, UnidentifiedImageError

from vlserve.openai_types import ChatMessage, ContentPart

DEFAULT_PORT = 8000


def default_server() -> str:
    """VLSERVE_URL, else this machine's server on PORT (8000 unless set)."""
    return os.environ.get("VLSERVE_URL") or f"http://127.0.0.1:{os.environ.get('PORT') or DEFAULT_PORT}"


class ClientError(Exception):
    """Something the user can fix; the message is one line."""


def explain(exc: BaseException, server: str) -> ClientError:
    """One line for a failed call to `server`: what went wrong and what to do."""
    if isinstance(exc, ClientError):
        return exc
    status = getattr(exc, "status_code", None)
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
    if isinstance(exc, aiohttp.ClientResponseError):
        status = exc.status
    # Timeouts first: the SDK's timeout error is a kind of its connection error.
    if isinstance(exc, (openai.APITimeoutError, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)):
        return ClientError(f"the server at {server} did not answer in time")
    if isinstance(exc, (openai.APIConnectionError, httpx.ConnectError, httpx.ConnectTimeout, ConnectionError,
                        aiohttp.ClientConnectorError)):
        return ClientError(f"cannot reach a server at {server}: is `vlserve serve` running there? "
                           "(set --server or VLSERVE_URL to use another)")
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL, ValueError)) and "://" not in server[:12]:
        return ClientError(f"{server!r} is not a server URL: write it as http://host:port")
    if status == 401:
        return ClientError(f"the server at {server} needs an API key: pass --api-key or set VLSERVE_API_KEY"
                           + (" (the one given was refused)" if "Incorrect" in _message_of(exc) else ""))
    if status == 404:
        return ClientError(f"{server} answered 404: is it a vlserve server (not a path below one)? "
                           "Check --server / VLSERVE_URL")
    if status is not None:
        return ClientError(f"the server at {server} answered HTTP {status}: {_message_of(exc)}")
    return ClientError(f"{type(exc).__name__}: {exc}")


def _message_of(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            body = exc.response.json()
        except ValueError:
            return exc.response.text[:200]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(exc)


def check_image_file(path: str | Path) -> Path:
    """A readable image file, or a ClientError that names the path."""
    path = Path(path)
    if not path.exists():
        raise ClientError(f"{path}: no such file")
    if not path.is_file():
        raise ClientError(f"{path}: not a file")
    try:
        with Image.open(path) as image:
            image_format = image.format
    except (UnidentifiedImageError, OSError):
        raise ClientError(f"{path}: not an image file that can be read") from None
    if image_format is None:
        raise ClientError(f"{path}: not an image file that can be read")
    return path


def image_to_data_url(path: str | Path) -> str:
    path = check_image_file(path)
    with Image.open(path) as image:
        mime = Image.MIME.get(image.format or "", "image/jpeg")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def image_ref(image: str | Path) -> str:
    """A local file becomes a data URL; URLs and data URLs pass through."""
    text = str(image)
    if text.startswith(("http://", "https://", "data:")):
        return text
    return image_to_data_url(text)


def user_message(prompt: str, images: Sequence[str | Path] = ()) -> ChatMessage:
    content: list[ContentPart] = [{"type": "image_url", "image_url": {"url": image_ref(i)}} for i in images]
    content.append({"type": "text", "text": prompt})
    return {"role": "user", "content": content}


class VLClient:
    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 300.0) -> None:
        base_url = base_url or default_server()
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.openai = OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key or "none", timeout=timeout,
                             max_retries=0)
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()
        self.openai.close()

    def __enter__(self) -> VLClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def default_model(self) -> str:
        return self.openai.models.list().data[0].id

    # `sampling` goes to the openai SDK untouched (max_tokens, temperature, extra_body, ...).
    def chat(self, messages: list[ChatMessage], model: str | None = None, **sampling: Any) -> str:
        response = self.openai.chat.completions.create(
            model=model or self.default_model(), messages=messages, **sampling)  # type: ignore[arg-type]
        return response.choices[0].message.content or ""

    def chat_stream(self, messages: list[ChatMessage], model: str | None = None, **sampling: Any) -> Iterator[str]:
        stream: openai.Stream[ChatCompletionChunk] = self.openai.chat.completions.create(
            model=model or self.default_model(), messages=messages, stream=True, **sampling)  # type: ignore[arg-type,assignment]
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    def _json(self, response: httpx.Response) -> dict[str, object]:
        try:
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPStatusError, ValueError) as exc:
            raise explain(exc, self.base_url) from None

    def health(self) -> dict[str, object]:
        return self.http.get("/health").json()

    def usage(self, start: str | None = None, end: str | None = None) -> list[dict[str, object]]:
        """/admin/usage's rows (an admin key's)."""
        params = {name: day for name, day in (("start", start), ("end", end)) if day}
        try:
            response = self.http.get("/admin/usage", params=params)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise explain(exc, self.base_url) from None

    def gpu_status(self) -> dict[str, object]:
        try:
            return self._json(self.http.get("/gpu/status"))
        except httpx.HTTPError as exc:
            raise explain(exc, self.base_url) from None

    def infer(self, prompt: str, image: str | Path | None = None, **fields: object) -> dict[str, object]:
        body = {"prompt": prompt, **fields}
        if image is not None:
            body["image"] = image_ref(image)
        return self._json(self.http.post("/infer", json=body))

    def infer_upload(self, prompt: str, image: str | Path, **fields: object) -> dict[str, object]:
        path = Path(image)
        with path.open("rb") as fh:
            files = {"image": (path.name, fh, mimetypes.guess_type(path.name)[0] or "application/octet-stream")}
            return self._json(self.http.post("/infer/upload", data={"prompt": prompt, **fields}, files=files))

    def analyze(self, task: str, image: str | Path, **fields: object) -> dict[str, object]:
        return self._json(self.http.post("/analyze", json={"task": task, "image": image_ref(image), **fields}))

    def analyze_upload(self, task: str, image: str | Path, **fields: object) -> dict[str, object]:
        path = Path(image)
        with path.open("rb") as fh:
            files = {"image": (path.name, fh, mimetypes.guess_type(path.name)[0] or "application/octet-stream")}
            return self._json(self.http.post("/analyze/upload", data={"task": task, **fields}, files=files))
