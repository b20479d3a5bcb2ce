"""``POST /v1/chat/completions``: OpenAI Chat Completions, the proxy's own dialect."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.fronts.entry import (
    Backend,
    event_stream,
    open_turn,
    refuse_unknown_key,
    summary_headers,
)
from gateway.net.inbound import bearer_token, header_map, read_json_body

__all__ = ["chat_completions"]


async def chat_completions(request: Request, backend: Backend) -> Response:
    """OpenAI Chat Completions, streamed or not, with the agent's actions as tools."""
    headers = header_map(request)
    key = bearer_token(headers.get("authorization"))
    refuse_unknown_key(backend, request, key)
    body = await read_json_body(request)
    turn = await open_turn(backend, request, body, headers, key)
    # Headers too: clients that drop unknown JSON fields (and pages) still learn the id and,
    # when the answer is whole, what ran.
    if not turn.stream:
        completion = await backend.proxy.complete(turn)
        return Response(
            orjson.dumps(completion), media_type="application/json", headers=summary_headers(turn)
        )
    return await event_stream(backend.proxy.stream(turn), summary_headers(turn, final=False))
