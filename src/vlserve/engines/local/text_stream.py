"""Turning a stream of token ids into a stream of text, and cutting it at stop strings."""

from __future__ import annotations


class IncrementalDecoder:
    """Decodes token ids one at a time into text pieces that are safe to send.

    Byte-level BPE tokens can split a UTF-8 character; a piece is held back while the
    decoded text ends in the replacement character, and released once it completes.
    Each step decodes only a short window (the tokens since the last piece, plus the
    ones before it for context), so a whole answer costs time linear in its length.
    """

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # the window starts here: tokens already sent, kept as context
        self._read = 0    # tokens before this have been sent

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def _next_piece(self, final: bool) -> str:
        before = self._decode(self._ids[self._prefix:self._read])
        text = self._decode(self._ids[self._prefix:])
        if not final and (text.endswith("\ufffd") or len(text) <= len(before)):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(before):]

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._next_piece(final=False)

    def flush(self) -> str:
        return self._next_piece(final=True)


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
