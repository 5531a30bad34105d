"""A small typed client for vlserve, built on the official openai SDK (and httpx for
the simple endpoints). Used by the CLI and the origin design's test scripts."""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI


def image_to_data_url(path: str | Path) -> str:
    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def image_ref(image: str | Path) -> str:
    """A local file becomes a data URL; URLs and data URLs pass through."""
    text = str(image)
    if text.startswith(("http://", "https://", "data:")):
        return text
    return image_to_data_url(text)


def user_message(prompt: str, images: Sequence[str | Path] = ()) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image_ref(i)}} for i in images]
    content.append({"type": "text", "text": prompt})
    return {"role": "user", "content": content}


class VLClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float = 300.0) -> None:
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

    def chat(self, messages: list[dict[str, Any]], model: str | None = None, **sampling: Any) -> str:
        response = self.openai.chat.completions.create(model=model or self.default_model(),
                                                       messages=messages, **sampling)  # type: ignore[arg-type]
        return response.choices[0].message.content or ""

    def chat_stream(self, messages: list[dict[str, Any]], model: str | None = None, **sampling: Any) -> Iterator[str]:
        stream: Any = self.openai.chat.completions.create(model=model or self.default_model(),
                                                          messages=messages, stream=True, **sampling)  # type: ignore[arg-type]
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise RuntimeError(f"HTTP {response.status_code}: {message}")
        return response.json()

    def health(self) -> dict[str, Any]:
        return self.http.get("/health").json()

    def gpu_status(self) -> dict[str, Any]:
        return self._json(self.http.get("/gpu/status"))

    def infer(self, prompt: str, image: str | Path | None = None, **fields: Any) -> dict[str, Any]:
        body = {"prompt": prompt, **fields}
        if image is not None:
            body["image"] = image_ref(image)
        return self._json(self.http.post("/infer", json=body))

    def infer_upload(self, prompt: str, image: str | Path, **fields: Any) -> dict[str, Any]:
        path = Path(image)
        with path.open("rb") as fh:
            files = {"image": (path.name, fh, mimetypes.guess_type(path.name)[0] or "application/octet-stream")}
            return self._json(self.http.post("/infer/upload", data={"prompt": prompt, **fields}, files=files))

    def analyze(self, task: str, image: str | Path, **fields: Any) -> dict[str, Any]:
        return self._json(self.http.post("/analyze", json={"task": task, "image": image_ref(image), **fields}))

    def analyze_upload(self, task: str, image: str | Path, **fields: Any) -> dict[str, Any]:
        path = Path(image)
        with path.open("rb") as fh:
            files = {"image": (path.name, fh, mimetypes.guess_type(path.name)[0] or "application/octet-stream")}
            return self._json(self.http.post("/analyze/upload", data={"task": task, **fields}, files=files))
