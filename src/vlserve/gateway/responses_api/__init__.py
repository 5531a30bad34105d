"""OpenAI's Responses API, translated onto the one engine call every route uses.

A Responses request becomes a chat completion request (request.py), which goes through
the same builder, media policy and `Inference` as `/v1/chat/completions`, so it works
on every engine, LMDeploy 0.11 included (which has no Responses API). The answer comes
back as a Response object, or as the Responses event stream (output.py, events.py).
Nothing is stored: `previous_response_id` is refused, and the client sends the whole
conversation each turn (openai-agents and pydantic-ai do by default).
"""

from vlserve.gateway.responses_api.events import ResponseEvents
from vlserve.gateway.responses_api.output import from_completion
from vlserve.gateway.responses_api.request import ResponsesRequest, to_chat_request

__all__ = ["ResponseEvents", "ResponsesRequest", "from_completion", "to_chat_request"]
