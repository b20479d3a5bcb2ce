"""``POST /v1/messages``: the Anthropic Messages API over the shared tool loop.

The request is translated onto the proxy's Chat Completions turn: ``system`` becomes the first
system message (after the agent's own prompt), ``text`` blocks content, ``tool_use`` blocks an
assistant message's ``tool_calls``, ``tool_result`` blocks tool messages; client ``tools`` with
``input_schema`` become function tools; ``tool_choice`` maps to its Chat equivalent. The answer
is translated back: text and ``tool_use`` content blocks, ``stop_reason`` (``end_turn``,
``tool_use``, ``max_tokens``), ``usage`` in Anthropic's names, and Anthropic's event stream
(``message_start``, ``content_block_start``/``delta``/``stop``, ``message_delta``,
``message_stop``). The client key is ``x-api-key`` or a bearer token; ``anthropic-version`` is
accepted and not checked. Errors leave in Anthropic's shape (:func:`error_body`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import RequestError, UpstreamError
from gateway.fronts.entry import (
    Backend,
    client_calls,
    event_stream,
    open_turn,
    refuse_unknown_key,
    summary_headers,
)
from gateway.ids import random_hex
from gateway.net.inbound import bearer_token, header_map, read_json_body
from gateway.proxy.turns import Turn

__all__ = ["PATH", "error_body", "messages"]

PATH = "/v1/messages"
_PASSTHROUGH = {"temperature": "temperature", "top_p": "top_p", "stop_sequences": "stop"}
_IGNORED = frozenset({"top_k", "thinking", "service_tier", "container", "mcp_servers"})
_STOP = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    """An error in Anthropic's shape."""
    kind = _ERROR_TYPES.get(status, "overloaded_error" if status in (503, 529) else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _fail(message: str) -> RequestError:
    return RequestError(400, message, "invalid_request")


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _fail(f"{where}: content must be a string or a list of blocks")
    parts = []
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise _fail(f"{where}: block type {str(kind)[:32]!r} is not supported here")
        parts.append(str(block.get("text", "")))
    return "".join(parts)


def _user_messages(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise _fail(f"{where}: content must be a string or a list of blocks")
    out: list[dict[str, Any]] = []
    text: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            result = block.get("content", "")
            body = _text_of(result, f"{where}[{i}].content") if result else ""
            if block.get("is_error"):
                body = f"Error: {body}"
            out.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id")), "content": body}
            )
        elif kind == "text":
            text.append(block)
        else:
            raise _fail(f"{where}[{i}]: block type {str(kind)[:32]!r} is not supported")
    if text:
        out.append({"role": "user", "content": _text_of(text, where)})
    return out


def _assistant_message(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise _fail(f"{where}: content must be a string or a list of blocks")
    text, calls = [], []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": str(block.get("name", "")), "arguments": arguments}
            calls.append({"id": str(block.get("id")), "type": "function", "function": function})
        elif kind not in ("thinking", "redacted_thinking"):
            raise _fail(f"{where}[{i}]: block type {str(kind)[:32]!r} is not supported")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        out.append({"role": "system", "content": _text_of(system, "system")})
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "messages: a non-empty list is required", param="messages")
    for i, message in enumerate(raw):
        role = message.get("role") if isinstance(message, dict) else None
        where = f"messages[{i}]"
        if role == "user":
            out += _user_messages(message.get("content"), f"{where}.content")
        elif role == "assistant":
            out.append(_assistant_message(message.get("content"), f"{where}.content"))
        else:
            raise _fail(f"{where}.role: must be 'user' or 'assistant'")
    return out


def _tools(raw: Any) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _fail("tools: must be a list")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _fail(f"tools[{i}]: tool type {str(kind)[:40]!r} is not supported")
        function = {
            "name": tool.get("name"),
            "description": tool.get("description", ""),
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(raw: Any) -> Any:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    choices = {"auto": "auto", "any": "required", "none": "none"}
    if kind in choices:
        return choices[kind]
    if kind == "tool":
        return {"type": "function", "function": {"name": raw.get("name")}}
    raise _fail(f"tool_choice: type {str(kind)[:32]!r} is not supported")


def chat_body(body: Any) -> dict[str, Any]:
    """The Chat Completions body a Messages request stands for."""
    if not isinstance(body, dict):
        raise _fail("the request body must be a JSON object")
    if not isinstance(body.get("max_tokens"), int):
        raise RequestError(400, "max_tokens: an integer is required", param="max_tokens")
    chat: dict[str, Any] = {
        "model": body.get("model"),
        "messages": _messages(body),
        "max_tokens": body["max_tokens"],
        "stream": bool(body.get("stream")),
    }
    if chat["stream"]:
        chat["stream_options"] = {"include_usage": True}  # Anthropic's stream reports usage
    for name, target in _PASSTHROUGH.items():
        if name in body:
            chat[target] = body[name]
    tools, choice = _tools(body.get("tools")), _tool_choice(body.get("tool_choice"))
    if tools is not None:
        chat["tools"] = tools
    if choice is not None:
        chat["tool_choice"] = choice
        if isinstance(body["tool_choice"], dict) and body["tool_choice"].get(
            "disable_parallel_tool_use"
        ):
            chat["parallel_tool_calls"] = False
    conversation = body.get("conversation")
    user_id = (body.get("metadata") or {}).get("user_id")
    if conversation is None and isinstance(user_id, str):
        conversation = {"user_id": user_id}
    if conversation is not None:
        chat["conversation"] = conversation
    known = {"model", "messages", "system", "max_tokens", "stream", "tools", "tool_choice"}
    known |= {"metadata", "conversation", *_PASSTHROUGH, *_IGNORED}
    for name in sorted(set(body) - known):
        raise _fail(
            f"field {name[:64]!r} is not supported by this gateway",
        )
    return chat


def _blocks(text: Any, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if text:
        blocks.append({"type": "text", "text": text})
    for call in calls:
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": arguments if isinstance(arguments, dict) else {},
            }
        )
    return blocks


def _usage(turn: Turn) -> dict[str, int]:
    usage = turn.usage or {}
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }


def _message(
    turn: Turn, message_id: str, content: list[dict[str, Any]], stop: Any
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": turn.agent.config.id,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _usage(turn),
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return (
        b"event: " + event.encode() + b"\ndata: " + orjson.dumps({"type": event, **data}) + b"\n\n"
    )


async def _events(
    turn: Turn, message_id: str, first: str | None, deltas: AsyncIterator[str]
) -> AsyncIterator[bytes]:
    # The opening events leave with the first text: one write, not three.
    opening = _sse("message_start", {"message": _message(turn, message_id, [], None)})
    index = 0
    try:
        text_open = False
        async for delta in _chain(first, deltas):
            if not text_open:
                text_open = True
                block = {"type": "text", "text": ""}
                opening += _sse("content_block_start", {"index": index, "content_block": block})
            text = {"type": "text_delta", "text": delta}
            yield opening + _sse("content_block_delta", {"index": index, "delta": text})
            opening = b""
        if opening:
            yield opening
        if text_open:
            yield _sse("content_block_stop", {"index": index})
            index += 1
        finish = turn.final[1]
        for block in _blocks(None, client_calls(turn)):
            start = {**block, "input": {}}
            yield _sse("content_block_start", {"index": index, "content_block": start})
            partial = {
                "type": "input_json_delta",
                "partial_json": orjson.dumps(block["input"]).decode(),
            }
            yield _sse("content_block_delta", {"index": index, "delta": partial})
            yield _sse("content_block_stop", {"index": index})
            index += 1
        delta_body = {"stop_reason": _STOP.get(finish, "end_turn"), "stop_sequence": None}
        yield _sse(
            "message_delta",
            {"delta": delta_body, "usage": _usage(turn), "actiongate": turn.extension()},
        )
        yield _sse("message_stop", {})
    except (UpstreamError, RequestError) as e:
        yield opening + _sse("error", error_body(e.status, str(e)))


async def _chain(first: str | None, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    if first is None:
        return
    yield first
    async for delta in rest:
        yield delta


async def messages(request: Request, backend: Backend) -> Response:
    """Anthropic Messages, streamed or not, with the agent's actions as tools."""
    headers = header_map(request)
    key = headers.get("x-api-key") or bearer_token(headers.get("authorization"))
    refuse_unknown_key(backend, request, key)
    body = chat_body(await read_json_body(request))
    turn = await open_turn(backend, request, body, headers, key)
    message_id = f"msg_{random_hex(12)}"
    if turn.stream:
        # The first delta is awaited before anything is sent: an upstream failing at once is
        # still a plain HTTP error.
        deltas = backend.proxy.deltas(turn)
        first = await anext(deltas, None)
        events = _events(turn, message_id, first, deltas)
        return await event_stream(events, summary_headers(turn, final=False))
    await backend.proxy.complete(turn)
    message, finish = turn.final
    content = _blocks(message.get("content"), client_calls(turn))
    answer = _message(turn, message_id, content, _STOP.get(finish, "end_turn"))
    answer["actiongate"] = turn.extension()
    return Response(
        orjson.dumps(answer), media_type="application/json", headers=summary_headers(turn)
    )
