"""One upstream stream on its way to the client, event by event.

Whole events pass on exactly as the upstream sent them, except that:
- an error in one of LMDeploy's shapes becomes OpenAI's error event, and ends the stream
  (lmdeploy_compat.py);
- raw Qwen tags are rewritten into OpenAI's fields once one is seen (answer_rewrite.py);
- the usage object, when an event carries one, is parsed and reported;
- whether the stream ended with `[DONE]` is kept, so a stream cut short can be told.

An ordinary chunk costs one search, for any of the bytes that can make an event more than
bytes to pass on (an error's marker, a tag, a usage object, `[DONE]`); only the events of a
chunk where one is found are looked at further.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from vlserve.engines.upstream.answer_rewrite import TAG_BYTES, StreamRewriter
from vlserve.engines.upstream.lmdeploy_compat import MARKER, error_in_event
from vlserve.openai_types import Usage, usage_from
from vlserve.sse import EventSplitter, data_of, payload_of, split_keeping_ends

# An event that carries a usage object (not `"usage": null`, which some engines send in
# every chunk).
_USAGE = rb'"usage"\s*:\s*\{'
_HAS_USAGE = re.compile(_USAGE)
_NOTABLE = re.compile(b"|".join([re.escape(MARKER), *map(re.escape, TAG_BYTES), _USAGE, rb"\[DONE\]"]))


class StreamRelay:
    def __init__(self, report_usage: Callable[[Usage], None],
                 rewriter: StreamRewriter | None = None) -> None:
        self._splitter = EventSplitter()
        self._report_usage = report_usage
        self._rewriter = rewriter
        self.failed = False  # an error event was sent: the stream is over
        self.done = False  # the upstream's `[DONE]` arrived

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send the client for this chunk (possibly none yet)."""
        events = self._splitter.feed_raw(chunk)
        if not (_NOTABLE.search(events) or (self._rewriter is not None and self._rewriter.active)):
            return events  # the usual chunk, checked here: a call less for each one
        return self._pass_on(events)

    def finish(self) -> bytes:
        """What is left when the upstream closes: an unterminated last event, passed on."""
        return self._pass_on(self._splitter.rest())

    def _pass_on(self, events: bytes) -> bytes:
        if not events:
            return b""
        rewriting = self._rewriter is not None and self._rewriter.may_change(events)
        if not (rewriting or MARKER in events or _HAS_USAGE.search(events)):
            self._note_done(events)
            return events
        out = []
        for event, end in split_keeping_ends(events):
            changed = self._one(event, rewriting) if event.strip() else None
            out.append(event + end if changed is None else changed)
            if self.failed:
                break
        return b"".join(out)

    def _one(self, event: bytes, rewriting: bool) -> bytes | None:
        """The bytes that replace this event, or None to pass it on as it came."""
        error = error_in_event(event)
        if error is not None:
            self.failed = True
            return error.sse_event()
        if _HAS_USAGE.search(event):
            payload = payload_of(event)
            usage = usage_from(payload.get("usage")) if isinstance(payload, dict) else None
            if usage is not None:
                self._report_usage(usage)
        self._note_done(event)
        if rewriting and self._rewriter is not None:
            return self._rewriter.feed(event.strip())
        return None

    def _note_done(self, events: bytes) -> None:
        tail = events.rstrip()
        if tail.endswith(b"[DONE]"):
            last = tail.rsplit(b"\n\n", 1)[-1].rsplit(b"\r\n\r\n", 1)[-1]
            self.done = data_of(last) == b"[DONE]"
