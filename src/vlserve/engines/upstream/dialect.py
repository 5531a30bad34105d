"""How the gateway's hints are spelled for an OpenAI-compatible upstream, and what it refused.

- The pixel budget the images were prepared for goes as `mm_processor_kwargs`. LMDeploy
  changed where it reads it: up to 0.12 at the top level (`{"min_pixels", "max_pixels"}`,
  qwen3.py's get_processor_args), from 0.13 per modality (`{"image": {...}}`, base.py's
  preprocess, which ignores the top level). `lmdeploy` (the default) sends both, which
  every release from 0.11 to 0.18 reads correctly: the field is a free dict everywhere,
  no version checks its keys or passes them on, and each reads only its own form
  (checked in each minor version's source; tests/integration/test_lmdeploy_preprocessing.py
  runs 0.11.1's and 0.18.0's own preprocessing on the body). So an upstream whose version
  the gateway cannot know gets the budget applied, and so does `vlserve launch`'s.
  `flat` is the top-level form alone (vLLM's), `off` sends nothing.
- A schema the answer must follow goes as OpenAI's `response_format` (guided decoding in
  LMDeploy and vLLM) unless UPSTREAM_GUIDED_DECODING is off.
- Each image part may carry its content id as `uuid` (vLLM's name for a client's id of a
  media item, chat_utils.py: it then keys its processor, encoder and prefix caches on it
  instead of hashing the image). UPSTREAM_IMAGE_UUIDS `auto` (the default) sends it to a
  replica whose /v1/models says `owned_by: vllm`; `on` to every replica (LMDeploy 0.11-0.18
  read only the `image_url` object of a part and ignore it, checked in their source);
  `off` to none.

Both are optional: the client did not ask for them. An upstream may refuse one (vLLM
refuses `mm_processor_kwargs` unless started with --trust-request-mm-kwargs); a 400/422
whose message names a field the gateway added costs the client nothing: the request is
sent again without it, and that replica is never sent it again (logged once).
"""

from __future__ import annotations

import logging

from vlserve.engines.base import EngineRequest
from vlserve.engines.upstream.replicas import Replica
from vlserve.errors import ServiceError
from vlserve.openai_types import ChatMessage, ContentPart, EngineBody

log = logging.getLogger("vlserve.upstream")

MM_KWARGS = "mm_processor_kwargs"
RESPONSE_FORMAT = "response_format"
IMAGE_UUIDS = "uuid"
# Words in an upstream's refusal that name each optional field.
_NAMED_BY = {MM_KWARGS: ("mm_processor_kwargs",), RESPONSE_FORMAT: ("response_format", "guided", "json_schema"),
             IMAGE_UUIDS: ("uuid",)}


class UpstreamDialect:
    def __init__(self, mm_form: str, guided_decoding: bool, image_uuids: str = "auto") -> None:
        self._mm_form = mm_form
        self._guided = guided_decoding
        self._uuids = image_uuids

    def body_for(self, request: EngineRequest, replica: Replica) -> tuple[EngineBody, list[str]]:
        """The body to send this replica, and the names of the optional fields added to it."""
        body = request.body.copy()
        added: list[str] = []

        def may_add(name: str) -> bool:  # the client's own value wins; a refused field is not sent
            if name in body or name in replica.refused_fields:
                return False
            added.append(name)
            return True

        if request.image_pixels and self._mm_form != "off" and may_add(MM_KWARGS):
            bounds = {"min_pixels": request.image_pixels[0], "max_pixels": request.image_pixels[1]}
            body["mm_processor_kwargs"] = {"image": bounds, **bounds} if self._mm_form == "lmdeploy" else bounds
        if request.json_schema is not None and self._guided and may_add(RESPONSE_FORMAT):
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "extraction", "schema": request.json_schema}}
        if request.image_ids and self._sends_uuids(replica) and may_add(IMAGE_UUIDS):
            body["messages"] = with_image_uuids(body.get("messages") or [], request.image_ids)
        return body, added

    def _sends_uuids(self, replica: Replica) -> bool:
        return self._uuids == "on" or (self._uuids == "auto" and replica.owned_by == "vllm")

    def refused(self, replica: Replica, added: list[str], error: ServiceError) -> bool:
        """Whether `error` refuses a field the gateway added; if so, that replica won't get it again."""
        if error.status not in (400, 422):
            return False
        message = error.message.lower()
        named = [name for name in added if any(word in message for word in _NAMED_BY[name])]
        for name in named:
            replica.refused_fields.add(name)
            log.warning("upstream %s refused `%s` (%s); no longer sending it there", replica.base_url, name,
                        error.message[:200])
        return bool(named)


def with_image_uuids(messages: list[ChatMessage], ids: tuple[str, ...]) -> list[ChatMessage]:
    """The messages with each image_url part given its id as `uuid`, in order (new dicts:
    the request's own messages are kept for another replica)."""
    remaining = iter(ids)
    out: list[ChatMessage] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(part["type"] == "image_url" for part in content):
            parts: list[ContentPart] = [{**part, "uuid": next(remaining, "")} if part["type"] == "image_url" else part
                                        for part in content]
            message = {**message, "content": parts}
        out.append(message)
    return out
