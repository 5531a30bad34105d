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
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import openai_format as oai
from ..admission import Admission
from ..config import Settings
from ..errors import ErrorKind, ServiceError
from ..tiny_model import TINY_MODEL_NAME, ensure_tiny_model, is_tiny_checkpoint
from .answer import THINK_OPEN, AnswerStream, parse_answer
from .base import EngineRequest, EngineStatus, EngineStream
from .constraints import Constrainer, chosen_tools
from .generation import QueueStreamer, consume_exception, eos_ids, sampling_kwargs, text_length, to_processor_messages
from .text_stream import IncrementalDecoder, StopMatcher

log = logging.getLogger("vlserve.local")


@dataclass
class PreparedPrompt:
    inputs: Any  # BatchFeature of tensors
    prompt_tokens: int
    max_new_tokens: int
    sampling: dict[str, Any]
    stop: list[str]
    seed: int | None
    tools: bool = False                   # tool definitions reached the template: parse <tool_call> blocks
    in_reasoning: bool = False            # the template opened <think>: the answer starts in reasoning
    logits_processor: Any = None          # constrained decoding (constraints.py), or None

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
        self._generating = False  # set by the worker thread while model.generate() runs

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
        self._constrainer = Constrainer(self._processor.tokenizer, text_config.vocab_size)

    async def close(self) -> None:
        if self._load_task:
            self._load_task.cancel()
        self._worker.shutdown(wait=False, cancel_futures=True)

    def status(self) -> EngineStatus:
        info = {"engine": "local", "device": self._device, "max_model_len": self._max_len,
                "random_weights": self._is_tiny,
                "requests_in_engine": self._turns.active + self._turns.queued,
                "generating": self._generating}
        if self._model is not None:
            return EngineStatus(True, "ready", [self._model_id], info=info)
        if self._load_error:
            return EngineStatus(False, f"model failed to load: {self._load_error}", info=info)
        return EngineStatus(False, "model is loading", info=info)

    def _require_ready(self) -> None:
        if self._model is None:
            raise ServiceError(ErrorKind.ENGINE_UNAVAILABLE, "The model is not loaded yet"
                               + (f" ({self._load_error})." if self._load_error else "; retry shortly."),
                               headers={"Retry-After": "5"})

    # --- requests ---------------------------------------------------------------------
    async def chat(self, request: EngineRequest) -> dict[str, Any]:
        prepared = await self._prepare(_with_hints(request))
        release = await self._turns.acquire()
        try:
            parts, finish, completion_tokens = [], "length", 0
            async with aclosing(self._generate(prepared)) as pieces:
                async for piece, finish_reason, n in pieces:
                    parts.append(piece)
                    completion_tokens = n
                    finish = finish_reason or finish
        finally:
            release()
        answer = parse_answer("".join(parts), prepared.in_reasoning, prepared.tools)
        finish = "tool_calls" if answer.tool_calls else finish
        return oai.completion(oai.completion_id(), request.model, answer.message(self._keep_reasoning), finish,
                              oai.usage(prepared.prompt_tokens, completion_tokens))

    async def open_stream(self, request: EngineRequest) -> EngineStream:
        prepared = await self._prepare(_with_hints(request))
        include_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
        release = await self._turns.acquire()  # held until the stream is closed

        def report(usage: dict[str, int]) -> None:
            stream.usage = usage

        stream = EngineStream(self._stream(request.model, prepared, include_usage, report), on_close=release)
        return stream

    async def _stream(self, model: str, prepared: PreparedPrompt, include_usage: bool,
                      report_usage: Callable[[dict[str, int]], None]) -> AsyncIterator[bytes]:
        cid = oai.completion_id()
        completion_tokens, finish = 0, "length"
        answer = AnswerStream(prepared.in_reasoning, prepared.tools)

        def chunks_of(deltas: list[dict[str, Any]]) -> list[bytes]:
            if not self._keep_reasoning:
                deltas = [d for d in deltas if "reasoning_content" not in d]
            return [oai.sse(oai.chunk(cid, model, delta, None, include_usage)) for delta in deltas]

        async with aclosing(self._generate(prepared)) as pieces:
            yield oai.sse(oai.chunk(cid, model, {"role": "assistant", "content": ""}, None, include_usage))
            try:
                async for piece, finish_reason, n in pieces:
                    completion_tokens = n
                    for chunk in chunks_of(answer.feed(piece)) if piece else []:
                        yield chunk
                    finish = finish_reason or finish
                for chunk in chunks_of(answer.finish()):
                    yield chunk
                finish = "tool_calls" if answer.calls else finish
            except ServiceError as exc:  # the response has started: the error is its last event
                yield exc.sse_event()
                return
            except Exception:
                log.exception("generation failed mid-stream")
                yield ServiceError(ErrorKind.INTERNAL, "Generation failed; it has been logged.").sse_event()
                return
            yield oai.sse(oai.chunk(cid, model, {}, finish, include_usage))
            report_usage(oai.usage(prepared.prompt_tokens, completion_tokens))
            if include_usage:
                yield oai.sse(oai.usage_chunk(cid, model, oai.usage(prepared.prompt_tokens, completion_tokens)))
            yield oai.DONE

    async def _prepare(self, request: dict[str, Any]) -> PreparedPrompt:
        self._require_ready()
        if (request.get("n") or 1) > 1:
            raise ServiceError(ErrorKind.BAD_REQUEST, "The local engine generates one choice per request (n=1).",
                               param="n")
        self._refuse_what_cannot_fit(request["messages"])
        return await asyncio.to_thread(self._prepare_blocking, request)

    def _refuse_what_cannot_fit(self, messages: list[dict[str, Any]]) -> None:
        """A prompt with more characters than the context could hold even at the longest
        token's length is refused before tokenising (which, for megabytes of text, takes
        seconds of CPU and gigabytes of memory): in well under a millisecond."""
        chars = text_length(messages)
        most = self._max_len * self._max_token_chars
        if chars > most:
            raise ServiceError(ErrorKind.CONTEXT_TOO_LONG, f"The prompt has {chars:,} characters; this model's "
                               f"context of {self._max_len} tokens (MAX_MODEL_LEN) holds at most {most:,}.",
                               param="messages")

    def _prepare_blocking(self, request: dict[str, Any]) -> PreparedPrompt:
        messages, images = to_processor_messages(request["messages"])
        _, tools = chosen_tools(request)
        text = self._processor.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                   add_generation_prompt=True)
        in_reasoning = text.rstrip().endswith(THINK_OPEN)
        inputs = self._processor(text=[text], images=images or None, return_tensors="pt")
        prompt_tokens = int(inputs["input_ids"].shape[1])
        if prompt_tokens >= self._max_len:
            raise ServiceError(ErrorKind.CONTEXT_TOO_LONG, f"The prompt is {prompt_tokens} tokens (images "
                               f"included); this model's context is {self._max_len} tokens (MAX_MODEL_LEN).",
                               param="messages")
        wanted = request.get("max_completion_tokens") or request.get("max_tokens") or self._settings.max_tokens
        # Documented clamp: never generate past the context window.
        max_new = max(1, min(int(wanted), self._max_len - prompt_tokens))
        stop = request.get("stop") or []
        sampling = sampling_kwargs(request)
        if request.get("ignore_eos"):  # LMDeploy's and vLLM's field: generate exactly max_tokens
            sampling["min_new_tokens"] = max_new
        return PreparedPrompt(
            inputs=inputs.to(self._device), prompt_tokens=prompt_tokens, max_new_tokens=max_new,
            sampling=sampling, stop=[stop] if isinstance(stop, str) else list(stop),
            seed=request.get("seed"), tools=bool(tools), in_reasoning=in_reasoning,
            logits_processor=self._constrainer.logits_processor(request, in_reasoning),
        )

    async def _generate(self, prepared: PreparedPrompt) -> AsyncGenerator[tuple[str, str | None, int], None]:
        """Yield (text piece, finish_reason or None, completion tokens so far)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        streamer = QueueStreamer(loop, queue)
        job = loop.run_in_executor(self._worker, self._generate_blocking, prepared, streamer, cancel)
        decoder = IncrementalDecoder(self._processor.tokenizer)
        stops = StopMatcher(prepared.stop)
        eos = set(eos_ids(self._model))
        count, finish = 0, None
        try:
            while True:
                token = await queue.get()
                if token is None:
                    break
                if token in eos:
                    finish = "stop"
                    continue
                count += 1
                piece, hit = stops.feed(decoder.add(token))
                if hit:
                    yield piece, "stop", count
                    return
                yield piece, None, count
            await job  # re-raises a failure from the worker thread
            tail, _ = stops.feed(decoder.flush())
            yield tail + stops.flush(), finish or "length", count
        finally:
            cancel.set()
            job.add_done_callback(consume_exception)

    def _generate_blocking(self, prepared: PreparedPrompt, streamer, cancel: threading.Event) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        self._generating = True
        try:
            if prepared.seed is not None:
                torch.manual_seed(prepared.seed)
            with torch.inference_mode():
                self._model.generate(
                    **prepared.inputs, max_new_tokens=prepared.max_new_tokens, streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                    logits_processor=LogitsProcessorList([prepared.logits_processor] if prepared.logits_processor
                                                         else []),
                    **prepared.sampling,
                )
        except ValueError as exc:  # transformers' checks of the sampling settings
            raise ServiceError(ErrorKind.BAD_REQUEST, f"The sampling settings were refused: {exc}") from None
        except RuntimeError as exc:
            if "probability tensor" in str(exc):  # sampling settings that overflow to inf/nan
                raise ServiceError(ErrorKind.BAD_REQUEST, "The sampling settings made the probabilities "
                                   "invalid (inf or nan); use less extreme values.") from None
            if isinstance(exc, torch.OutOfMemoryError):
                raise ServiceError(ErrorKind.ENGINE_UNAVAILABLE, "The engine ran out of memory for this "
                                   "request; try fewer or smaller images or a shorter answer.") from None
            raise
        finally:
            self._generating = False
            streamer.finish()


def _with_hints(request: EngineRequest) -> dict[str, Any]:
    """The body, with the gateway's schema hint as a constraint unless the client set one."""
    if request.json_schema is None or request.body.get("response_format"):
        return request.body
    return {**request.body, "response_format": {"type": "json_schema", "json_schema": {
        "name": "extraction", "schema": request.json_schema}}}
