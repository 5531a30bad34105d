"""Turning a stream of token ids into a stream of text, and cutting it at stop strings."""

from __future__ import annotations


class IncrementalDecoder:
    """Decodes token ids one at a time into text pieces that are safe to send.

    Byte-level BPE tokens can split a UTF-8 character; a piece is held back while the
    decoded text ends in the replacement character, and released once it completes.
    """

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._sent = 0  # characters of the decoded text already handed out

    def _text(self) -> str:
        return self._tokenizer.decode(self._ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._text()
        if text.endswith("\ufffd"):
            return ""
        piece, self._sent = text[self._sent:], len(text)
        return piece

    def flush(self) -> str:
        text = self._text()
        piece, self._sent = text[self._sent:], len(text)
        return piece


class StopMatcher:
    """Finds the first stop string in streamed text; holds back text that may begin one.

    `feed` returns (text safe to emit, whether a stop string was hit). Text from the stop
    string on is dropped, as OpenAI does.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self._hold = max((len(s) for s in self._stops), default=1) - 1

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        self._pending += text
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            out, self._pending = self._pending[: min(hits)], ""
            return out, True
        cut = max(0, len(self._pending) - self._hold)
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out
