"""LocalEngine: Hugging Face transformers in this process, on CPU or CUDA.

One generation runs at a time per model (a single worker thread). Its turn is an
admission place (the same primitive as the gateway's): up to LOCAL_MAX_QUEUE requests
wait for it, for up to QUEUE_TIMEOUT_S, more are refused with 429. A stream takes its
turn before it is returned, so a refusal is a status, not an error event. Tokens stream
out of the worker thread through an asyncio queue as they are generated; closing the
stream (client gone) sets a flag that the model's stopping criteria checks between tokens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path
from typing import Any

from PIL import Image

from vlserve import openai_format as oai
from vlserve import sse
from vlserve.admission import Admission
from vlserve.config import Settings
from vlserve.engines.answer import THINK_OPEN
from vlserve.engines.base import EngineInfo, EngineRequest, EngineStatus, EngineStream
from vlserve.engines.local.constraints import Constrainer, chosen_tools
from vlserve.engines.local.generate import PreparedPrompt, TokenGenerator
from vlserve.engines.local.generation import (
    check_local_options,
    eos_ids,
    one_prompt,
    sampling_kwargs,
    text_length,
    to_processor_messages,
    top_logprobs,
    with_hints,
)
from vlserve.engines.local.output import AnswerShape, Generated, StreamedChoice, whole_answer
from vlserve.engines.local.tiny_model import TINY_MODEL_NAME, ensure_tiny_model, is_tiny_checkpoint
from vlserve.engines.local.token_scores import LogprobFormatter
from vlserve.errors import ErrorKind, ServiceError
from vlserve.openai_types import Completion, EngineBody, Kind, Tool, Usage, max_tokens_of

log = logging.getLogger("vlserve.local")


class LocalEngine:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model_path = settings.model_path
        self._is_tiny = not settings.model_path or is_tiny_checkpoint(settings.model_path)
        self._model_id = settings.served_model_name or self._default_model_id()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlserve-generate")
        self._keep_reasoning = settings.reasoning == "keep"
        self._turns = Admission(1, settings.local_max_queue, settings.queue_timeout_s, who="The local engine")
        self._load_task: asyncio.Task | None = None
        self._load_error: str | None = None
        self._model: Any = None      # transformers' model and processor, once loaded
        self._processor: Any = None
        self._device = "cpu"
        self._max_len = settings.max_model_len
        self._max_token_chars = 1
        self._constrainer: Constrainer
        self._formatter: LogprobFormatter
        self._generator: TokenGenerator | None = None

    def _default_model_id(self) -> str:
        if self._is_tiny:
            return TINY_MODEL_NAME
        path = self._model_path or ""
        return Path(path.rstrip("/")).name or path

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._load_task = asyncio.create_task(self._load())

    async def _load(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._worker, self._load_blocking)
            log.info("local engine ready: %s on %s (max_model_len %d)", self._model_id, self._device, self._max_len)
        except Exception as exc:  # reported by /health; requests get 503
            self._load_error = f"{type(exc).__name__}: {exc}"
            log.error("local engine failed to load %s: %s", self._model_path, self._load_error)

    def _load_blocking(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if self._settings.local_threads:
            torch.set_num_threads(self._settings.local_threads)
        if self._is_tiny:
            self._model_path = str(ensure_tiny_model(self._settings.cache_dir / "models"))
        want = self._settings.local_device
        self._device = "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"
        dtype = torch.bfloat16 if self._device == "cuda" else torch.float32
        path = str(self._model_path)
        self._processor = AutoProcessor.from_pretrained(path)
        model: Any = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
        self._model = model.to(self._device).eval()
        text_config = getattr(model.config, "text_config", model.config)
        limit = getattr(text_config, "max_position_embeddings", None)
        self._max_len = min(self._settings.max_model_len, limit) if limit else self._settings.max_model_len
        # The most characters one token can stand for (byte-level BPE: a token's string has
        # at least as many symbols as the text it decodes to has characters).
        self._max_token_chars = max(len(token) for token in self._processor.tokenizer.get_vocab())
        self._constrainer = Constrainer(self._processor.tokenizer, text_config.vocab_size, eos_ids(model))
        self._formatter = LogprobFormatter(self._processor.tokenizer)
        self._generator = TokenGenerator(self._model, self._processor.tokenizer, self._worker)

    async def close(self) -> None:
        if self._load_task:
            self._load_task.cancel()
        self._worker.shutdown(wait=False, cancel_futures=True)

    def status(self) -> EngineStatus:
        info: EngineInfo = {"engine": "local", "device": self._device, "max_model_len": self._max_len,
                "random_weights": self._is_tiny,
                "requests_in_engine": self._turns.active + self._turns.queued,
                "generating": bool(self._generator and self._generator.generating)}
        if self._model is not None:
            return EngineStatus(True, "ready", [self._model_id], info=info, max_model_len=self._max_len)
        if self._load_error:
            return EngineStatus(False, f"model failed to load: {self._load_error}", info=info)
        return EngineStatus(False, "model is loading", info=info)

    @property
    def _loaded(self) -> TokenGenerator:
        assert self._generator is not None, "requests are prepared only once the model is loaded"
        return self._generator

    def _require_ready(self) -> None:
        if self._model is None:
            raise ServiceError(ErrorKind.ENGINE_UNAVAILABLE, "The model is not loaded yet"
                               + (f" ({self._load_error})." if self._load_error else "; retry shortly."),
                               headers={"Retry-After": "5"})

    # --- requests ---------------------------------------------------------------------
    async def complete(self, request: EngineRequest) -> Completion:
        prepared = await self._prepare(request)
        release = await self._turns.acquire(_described(request))
        try:  # the choices are generated one after another, in one turn
            results = [await self._generate_whole(prepared, seeded=index == 0) for index in range(prepared.choices)]
        finally:
            release()
        return whole_answer(prepared.shape, self._formatter, results, prepared.prompt_tokens)

    async def _generate_whole(self, prepared: PreparedPrompt, seeded: bool) -> Generated:
        result = Generated("", "length", 0)
        parts = []
        async with aclosing(self._loaded.generate(prepared, seeded)) as steps:
            async for step in steps:
                parts.append(step.piece)
                result.tokens = step.tokens
                result.scores += step.scores
                result.finish = step.finish or result.finish
        result.text = "".join(parts)
        return result

    async def open_stream(self, request: EngineRequest) -> EngineStream:
        prepared = await self._prepare(request)
        include_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
        release = await self._turns.acquire(_described(request))  # held until the stream is closed

        def report(usage: Usage) -> None:
            stream.usage = usage

        stream = EngineStream(self._stream(prepared, include_usage, report), on_close=release)
        return stream

    async def _stream(self, prepared: PreparedPrompt, include_usage: bool,
                      report_usage: Callable[[Usage], None]) -> AsyncIterator[bytes]:
        shape = prepared.shape
        cid = oai.completion_id(shape.kind)
        completion_tokens = 0
        try:
            for index in range(prepared.choices):
                choice = StreamedChoice(shape, self._formatter, cid, index, include_usage)
                for event in choice.start():
                    yield event
                finish, tokens = "length", 0
                async with aclosing(self._loaded.generate(prepared, seeded=index == 0)) as steps:
                    async for step in steps:
                        for event in choice.feed(step.piece, step.scores):
                            yield event
                        finish, tokens = step.finish or finish, step.tokens
                completion_tokens += tokens
                for event in choice.finish(finish):
                    yield event
        except ServiceError as exc:  # the response has started: the error is its last event
            yield exc.sse_event()
            return
        except Exception:
            log.exception("generation failed mid-stream")
            yield ServiceError(ErrorKind.INTERNAL, "Generation failed; it has been logged.").sse_event()
            return
        usage = oai.usage(prepared.prompt_tokens, completion_tokens)
        report_usage(usage)
        if include_usage:
            yield sse.frame(oai.usage_chunk(cid, shape.model, usage, shape.kind))
        yield sse.DONE

    async def _prepare(self, request: EngineRequest) -> PreparedPrompt:
        self._require_ready()
        body = with_hints(request)
        if request.kind == "text":
            body = {**body, "prompt": one_prompt(body.get("prompt"))}
        check_local_options(body, request.kind)
        self._refuse_what_cannot_fit(body, request.kind)
        return await asyncio.to_thread(self._prepare_blocking, body, request.kind, request.image_pixels)

    def _refuse_what_cannot_fit(self, body: EngineBody, kind: Kind) -> None:
        """A prompt with more characters than the context could hold even at the longest
        token's length is refused before tokenising (which, for megabytes of text, takes
        seconds of CPU and gigabytes of memory): in well under a millisecond."""
        chars = len(body.get("prompt") or "") if kind == "text" else text_length(body.get("messages") or [])
        most = self._max_len * self._max_token_chars
        if chars > most:
            raise ServiceError(ErrorKind.CONTEXT_TOO_LONG, f"The prompt has {chars:,} characters; this model's "
                               f"context of {self._max_len} tokens (MAX_MODEL_LEN) holds at most {most:,}.",
                               param="prompt" if kind == "text" else "messages")

    def _prompt_text(self, body: EngineBody, kind: Kind) -> tuple[str, list[Image.Image], list[Tool]]:
        """The text the model continues, the images in it, and the tools it was shown."""
        if kind == "text":  # the completions API: the client's text as it is, no template
            return one_prompt(body.get("prompt")), [], []
        messages, images = to_processor_messages(body.get("messages") or [])
        _, tools = chosen_tools(body)
        text = self._processor.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                   add_generation_prompt=True)
        return text, images, tools

    def _prepare_blocking(self, body: EngineBody, kind: Kind, image_pixels: tuple[int, int] | None) -> PreparedPrompt:
        text, images, tools = self._prompt_text(body, kind)
        in_reasoning = kind == "chat" and text.rstrip().endswith(THINK_OPEN)
        # The pixel budget the gateway prepared the images for, as LMDeploy's processor is told
        # it (mm_processor_kwargs): the model's own processor defaults know nothing of it.
        size = {"shortest_edge": image_pixels[0], "longest_edge": image_pixels[1]} if images and image_pixels else {}
        inputs = self._processor(text=[text], images=images or None, return_tensors="pt",
                                 **({"size": size} if size else {}))
        prompt_tokens = int(inputs["input_ids"].shape[1])
        if prompt_tokens == 0:
            raise ServiceError(ErrorKind.BAD_REQUEST, "The prompt is empty: give the model some text to continue.",
                               param="prompt")
        if prompt_tokens >= self._max_len:
            raise ServiceError(ErrorKind.CONTEXT_TOO_LONG, f"The prompt is {prompt_tokens} tokens; "
                               f"this model's context is {self._max_len} tokens (MAX_MODEL_LEN).",
                               param="prompt" if kind == "text" else "messages")
        wanted = max_tokens_of(body) or self._settings.max_tokens
        # Documented clamp: never generate past the context window.
        max_new = max(1, min(int(wanted), self._max_len - prompt_tokens))
        stop = body.get("stop") or []
        sampling = sampling_kwargs(body)
        if body.get("ignore_eos"):  # LMDeploy's and vLLM's field: generate exactly max_tokens
            sampling["min_new_tokens"] = max_new
        top = top_logprobs(body, kind)
        shape = AnswerShape(kind, body["model"], tools=bool(tools), in_reasoning=in_reasoning,
                            keep_reasoning=self._keep_reasoning, logprobs=top is not None,
                            echo=text if kind == "text" and body.get("echo") else "")
        return PreparedPrompt(
            inputs=inputs.to(self._device), prompt_tokens=prompt_tokens, max_new_tokens=max_new,
            sampling=sampling, stop=[stop] if isinstance(stop, str) else list(stop),
            seed=body.get("seed"), shape=shape, choices=int(body.get("n") or 1), top_logprobs=top,
            grammar=self._constrainer.grammar(body, in_reasoning) if kind == "chat" else None,
        )


def _described(request: EngineRequest) -> str:
    """How a refusal behind this request names it: the local engine answers one at a
    time, so a long answer (a front-end's title request asking for 1,000 tokens) is what
    a waiting chat is stuck behind."""
    return f"one for up to {request.max_tokens:,} tokens" if request.max_tokens else "one"
