"""Log-probabilities of generated tokens, from the model's own scores.

`TokenScorer` is a logits processor placed first in the list the local engine gives
`generate()`: transformers runs custom processors before its sampling warpers
(temperature, top-k, top-p) and before our constrained decoding, so what it sees is the
model's distribution, which is what OpenAI and vLLM report. It keeps the last step's
log-softmax; the streamer, called with the token sampled at that step, asks for that
token's value and the top alternatives. Both run in the worker thread, one step at a
time, so the two never race.

The OpenAI shapes are built on the event loop from the numbers (`ScoredToken`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlserve.openai_types import ChatLogprobs, TextLogprobs, TopLogprob


@dataclass(frozen=True)
class ScoredToken:
    """One sampled token: its id and log-probability, and the most likely alternatives."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


class TokenScorer:
    """Logits processor that remembers the model's log-probabilities at each step."""

    def __init__(self, top: int) -> None:
        self._top = top
        self._last: Any = None  # log-softmax over the vocabulary, rows = sequences

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        self._last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def score(self, token: int, row: int = 0) -> ScoredToken:
        logprobs = self._last[row]
        top: tuple[tuple[int, float], ...] = ()
        if self._top:
            values, ids = logprobs.topk(self._top)
            top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
        return ScoredToken(token, float(logprobs[token]), top)


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE (GPT-2's, Qwen's) spells each byte as one printable character:
    printable Latin-1 bytes as themselves, the other 68 as the characters from U+0100 on.
    This maps those characters back to their bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    alphabet = {chr(byte): byte for byte in printable}
    alphabet.update({chr(256 + n): byte for n, byte in enumerate(others)})
    return alphabet


class LogprobFormatter:
    """Token ids → the strings and bytes OpenAI reports for them.

    `bytes` are the token's own bytes, also when they are part of a character that spans
    tokens (its `token` text then shows the replacement character, as OpenAI's does).
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._alphabet = _byte_level_alphabet() if type(decoder).__name__ == "ByteLevel" else None

    def text(self, token: int) -> str:
        return self._tokenizer.decode([token], skip_special_tokens=False)

    def token_bytes(self, token: int) -> list[int]:
        if self._alphabet is not None and token not in self._tokenizer.all_special_ids:
            spelled = self._tokenizer.convert_ids_to_tokens(token)
            if isinstance(spelled, str) and all(char in self._alphabet for char in spelled):
                return [self._alphabet[char] for char in spelled]
        return list(self.text(token).encode("utf-8"))

    def _entry(self, token: int, logprob: float) -> TopLogprob:
        return {"token": self.text(token), "logprob": logprob, "bytes": self.token_bytes(token)}

    def chat(self, scored: list[ScoredToken]) -> ChatLogprobs:
        """Chat completions' `logprobs` object for these tokens."""
        return {"content": [{**self._entry(s.token, s.logprob),
                             "top_logprobs": [self._entry(t, lp) for t, lp in s.top]} for s in scored],
                "refusal": None}

    def legacy(self, scored: list[ScoredToken], offset: int) -> tuple[TextLogprobs, int]:
        """The completions API's `logprobs` object for tokens whose text starts at `offset`
        in the answer, and the offset after them (offsets follow the tokens' own text)."""
        tokens = [self.text(s.token) for s in scored]
        offsets = []
        for token in tokens:
            offsets.append(offset)
            offset += len(token)
        return {"tokens": tokens, "token_logprobs": [s.logprob for s in scored],
                "top_logprobs": [{self.text(t): lp for t, lp in s.top} for s in scored],
                "text_offset": offsets}, offset
