"""The local engine's generation loop: one choice of one prepared prompt, token by token.

`model.generate()` runs in the engine's single worker thread; each token it produces is
handed to the event loop (generation.QueueStreamer), decoded incrementally, cut at stop
strings, and yielded as a `Step`. Closing the generator (client gone, stop string hit)
sets a flag the model's stopping criteria checks between tokens, so the worker is free
again within a token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from vlserve.engines.local.constraints import processor
from vlserve.engines.local.generation import QueueStreamer, consume_exception, eos_ids
from vlserve.engines.local.output import AnswerShape
from vlserve.engines.local.text_stream import IncrementalDecoder, StopMatcher
from vlserve.engines.local.token_scores import ScoredToken, TokenScorer
from vlserve.errors import ErrorKind, ServiceError


@dataclass
class PreparedPrompt:
    inputs: Any  # BatchFeature of tensors
    prompt_tokens: int
    max_new_tokens: int
    sampling: dict[str, Any]
    stop: list[str]
    seed: int | None
    shape: AnswerShape
    choices: int = 1
    top_logprobs: int | None = None       # None: no log-probabilities recorded
    grammar: Any = None                   # constrained decoding (constraints.py), or None


@dataclass
class Step:
    """What one generated token adds to a choice."""

    piece: str                 # text that is safe to send (may be empty)
    finish: str | None         # set on the last step
    tokens: int                # completion tokens so far
    scores: list[ScoredToken]  # the tokens' log-probabilities, when recorded


class TokenGenerator:
    """Runs generations of a loaded model on the engine's worker thread."""

    def __init__(self, model: Any, tokenizer: Any, worker: ThreadPoolExecutor) -> None:
        self._model, self._tokenizer, self._worker = model, tokenizer, worker
        self.generating = False  # set by the worker thread while model.generate() runs

    async def generate(self, prepared: PreparedPrompt, seeded: bool) -> AsyncGenerator[Step, None]:
        """One choice, a step per generated token (the last step says why it ended)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        scorer = TokenScorer(prepared.top_logprobs) if prepared.top_logprobs is not None else None
        streamer = QueueStreamer(loop, queue, scorer)
        seed = prepared.seed if seeded else None  # later choices go on from the seeded state
        job = loop.run_in_executor(self._worker, self._generate_blocking, prepared, streamer, scorer, cancel, seed)
        decoder = IncrementalDecoder(self._tokenizer)
        stops = StopMatcher(prepared.stop)
        eos = set(eos_ids(self._model))
        count, finish = 0, None
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                token, score = item
                if token in eos:
                    finish = "stop"
                    continue
                count += 1
                piece, hit = stops.feed(decoder.add(token))
                scores = [score] if score is not None else []
                if hit:
                    yield Step(piece, "stop", count, scores)
                    return
                yield Step(piece, None, count, scores)
            await job  # re-raises a failure from the worker thread
            tail, _ = stops.feed(decoder.flush())
            yield Step(tail + stops.flush(), finish or "length", count, [])
        finally:
            cancel.set()
            job.add_done_callback(consume_exception)

    def _generate_blocking(self, prepared: PreparedPrompt, streamer, scorer: TokenScorer | None,
                           cancel: threading.Event, seed: int | None) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        # The scorer first: it sees the model's own distribution, before any constraint.
        processors = [p for p in (scorer, processor(prepared.grammar) if prepared.grammar else None) if p is not None]
        self.generating = True
        try:
            if seed is not None:
                torch.manual_seed(seed)
            with torch.inference_mode():
                self._model.generate(
                    **prepared.inputs, max_new_tokens=prepared.max_new_tokens, streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                    logits_processor=LogitsProcessorList(processors), **prepared.sampling,
                )
        except ValueError as exc:  # transformers' checks of the sampling settings
            raise ServiceError(ErrorKind.BAD_REQUEST, f"The sampling settings were refused: {exc}") from None
        except RuntimeError as exc:
            if "probability tensor" in str(exc):  # sampling settings that overflow to inf/nan
                raise ServiceError(ErrorKind.BAD_REQUEST, "The sampling settings made the probabilities "
                                   "invalid (inf or nan); use less extreme values.") from None
            if isinstance(exc, torch.OutOfMemoryError):
                raise ServiceError(ErrorKind.ENGINE_OUT_OF_MEMORY, "The engine ran out of memory for this "
                                   "request; try fewer or smaller images or a shorter answer.") from None
            raise
        finally:
            self.generating = False
            streamer.finish()
