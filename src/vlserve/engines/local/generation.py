"""Between OpenAI-shaped requests and transformers' `generate()`: what the local engine
accepts, messages and images in, sampling arguments, and token ids streamed out of the
worker thread."""

from __future__ import annotations

import asyncio
import io
import logging

import pybase64
from PIL import Image

from vlserve.engines.base import EngineRequest
from vlserve.engines.local.token_scores import TokenScorer
from vlserve.errors import ErrorKind, ServiceError
from vlserve.openai_types import ChatMessage, EngineBody, Kind, text_of

log = logging.getLogger("vlserve.local")

LOCAL_MAX_CHOICES = 8  # choices are generated one after another in one turn: n is bounded

class QueueStreamer:
    """A transformers streamer that hands each generated token id to the event loop,
    with its log-probability when a scorer is recording them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue,
                 scorer: TokenScorer | None = None) -> None:
        self._loop, self._queue = loop, queue
        self._scorer = scorer
        self._seen_prompt = False

    def put(self, value) -> None:
        if not self._seen_prompt:  # generate() first hands over the prompt itself
            self._seen_prompt = True
            return
        for token in value.reshape(-1).tolist():
            score = self._scorer.score(token) if self._scorer else None
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (token, score))

    def end(self) -> None:
        pass

    def finish(self) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)


def consume_exception(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("generation ended with %r after its stream was closed", future.exception())


def eos_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


GREEDY_BELOW = 1e-5  # a temperature this small is greedy decoding (dividing by it overflows)


GenerateKwargs = dict[str, float | int | bool | None]  # transformers' generate() sampling arguments


def sampling_kwargs(body: EngineBody) -> GenerateKwargs:
    temperature = body.get("temperature")
    if temperature is not None and temperature < GREEDY_BELOW:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    kwargs: GenerateKwargs = {"do_sample": True}
    if temperature is not None:
        kwargs["temperature"] = float(temperature)
    if (top_p := body.get("top_p")) is not None:
        kwargs["top_p"] = float(top_p)
    if (top_k := body.get("top_k")) is not None:
        kwargs["top_k"] = int(top_k) or None  # 0 means "no top-k", as in vLLM
    if (penalty := body.get("repetition_penalty")) is not None:
        kwargs["repetition_penalty"] = float(penalty)
    return kwargs


def text_length(messages: list[ChatMessage]) -> int:
    """Characters of text in OpenAI messages (string content and text parts)."""
    return sum(len(text_of(message.get("content"))) for message in messages)


# A message as the chat template reads it: images are {"type": "image"} placeholders.
TemplateMessage = dict[str, object]


def to_processor_messages(messages: list[ChatMessage]) -> tuple[list[TemplateMessage], list[Image.Image]]:
    """OpenAI messages (images already data URLs) → chat-template messages + PIL images."""
    out: list[TemplateMessage] = []
    images: list[Image.Image] = []
    for message in messages:
        role = "system" if message["role"] == "developer" else message["role"]
        content = message.get("content")
        if role == "tool" and isinstance(content, list):  # the template writes a tool's result as text
            content = text_of(content)
        if content is None or isinstance(content, str):
            out.append({**message, "role": role, "content": content or ""})
            continue
        parts: list[dict[str, str]] = []
        for part in content:
            if part["type"] == "text":
                parts.append({"type": "text", "text": part.get("text") or ""})
            elif part["type"] == "video_url":
                raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, "Video is not supported by the local engine; "
                                   "serve the model with LMDeploy or vLLM (UPSTREAM_BASE_URL) for video.")
            elif part["type"] == "image_url":
                data = pybase64.b64decode(part["image_url"]["url"].split(",", 1)[1])  # the gateway's own
                images.append(Image.open(io.BytesIO(data)).convert("RGB"))
                parts.append({"type": "image"})
        out.append({**message, "role": role, "content": parts})
    return out, images


def check_local_options(body: EngineBody, kind: Kind) -> None:
    """What the local engine cannot do is refused, naming the field, never ignored."""
    choices = int(body.get("n") or 1)
    if choices > LOCAL_MAX_CHOICES:
        raise ServiceError(ErrorKind.BAD_REQUEST, f"n={choices}: the local engine generates at most "
                           f"{LOCAL_MAX_CHOICES} choices per request, one after another.", param="n")
    if kind != "text":
        return
    if body.get("suffix"):
        raise ServiceError(ErrorKind.BAD_REQUEST, "suffix (fill-in-the-middle) is not supported by the local "
                           "engine.", param="suffix")
    if (body.get("best_of") or choices) != choices:
        raise ServiceError(ErrorKind.BAD_REQUEST, "best_of is not supported by the local engine; use n.",
                           param="best_of")
    if body.get("echo") and body.get("logprobs") is not None:
        raise ServiceError(ErrorKind.BAD_REQUEST, "echo with logprobs (the prompt's own log-probabilities) is "
                           "not supported by the local engine.", param="echo")


def one_prompt(prompt: object) -> str:
    """The completions API's prompt as one string (one prompt per request here)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if isinstance(prompt, str):
        return prompt
    raise ServiceError(ErrorKind.BAD_REQUEST, "The local engine takes one text prompt per request (a string); "
                       "send several prompts as several requests, and text rather than token ids.", param="prompt")


def top_logprobs(body: EngineBody, kind: Kind) -> int | None:
    """How many alternatives to report per token, or None for no log-probabilities."""
    if kind == "text":  # the completions API: `logprobs` is the number of alternatives
        value = body.get("logprobs")
        return None if value is None else int(value)
    return int(body.get("top_logprobs") or 0) if body.get("logprobs") else None


def with_hints(request: EngineRequest) -> EngineBody:
    """The body, with the gateway's schema hint as a constraint unless the client set one."""
    if request.json_schema is None or request.body.get("response_format"):
        return request.body
    return {**request.body, "response_format": {"type": "json_schema", "json_schema": {
        "name": "extraction", "schema": request.json_schema}}}
