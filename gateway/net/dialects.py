"""Upstream dialects: the proxy's Chat Completions payloads in Anthropic's and OpenAI Responses'
wire formats, and their answers back as Chat Completions (whole, or chunk by chunk).

The tool loop speaks Chat Completions only; :class:`gateway.net.upstream.Upstream` translates at
the wire for an agent whose ``upstream.api`` is ``anthropic`` or ``responses``. A streamed answer
becomes ``chat.completion.chunk`` dicts that :class:`~gateway.net.sse.ChunkAssembler` merges as
usual, so streaming, tool calls and usage work the same for every dialect.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import UpstreamError

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "DIALECTS",
    "AnthropicChunks",
    "ResponsesChunks",
    "anthropic_request",
    "chat_from_anthropic",
    "chat_from_responses",
    "responses_request",
]

DIALECTS = ("chat", "responses", "anthropic")
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires ``max_tokens``; used when the client sent none."""

_ANTHROPIC_STOP = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls"}
_ANTHROPIC_STOP |= {"max_tokens": "length", "pause_turn": "stop", "refusal": "content_filter"}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return "" if content is None else str(content)


def _arguments(raw: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(raw or "{}") if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _usage(prompt: Any, completion: Any) -> dict[str, int]:
    p, c = int(prompt or 0), int(completion or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


# --- Anthropic Messages ------------------------------------------------------------------------


def _anthropic_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    role = message.get("role")
    if role == "tool":
        block = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
        return [{**block, "content": _text(message.get("content"))}]
    blocks: list[dict[str, Any]] = []
    if text := _text(message.get("content")):
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        args = _arguments(function.get("arguments"))
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": args}
        )
    return blocks


def _anthropic_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text(message.get("content")))
            continue
        wire_role = "assistant" if role == "assistant" else "user"
        blocks = _anthropic_blocks(message)
        if not blocks:
            continue
        if out and out[-1]["role"] == wire_role:  # Anthropic alternates user and assistant
            out[-1]["content"] += blocks
        else:
            out.append({"role": wire_role, "content": blocks})
    return "\n\n".join(s for s in system if s), out


def _anthropic_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if isinstance(choice, dict):
        out: dict[str, Any] = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        out = {"type": {"required": "any", "none": "none"}.get(str(choice), "auto")}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def anthropic_request(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """A Chat Completions payload as an Anthropic Messages request."""
    system, messages = _anthropic_messages(payload.get("messages") or [])
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = system
    for name in ("temperature", "top_p", "stream"):
        if payload.get(name) is not None:
            body[name] = payload[name]
    stop = payload.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = payload.get("tools")
    if tools:
        body["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
            }
            for t in tools
        ]
        choice = _anthropic_tool_choice(
            payload.get("tool_choice"), payload.get("parallel_tool_calls")
        )
        if choice is not None:
            body["tool_choice"] = choice
    return body


def chat_from_anthropic(data: Any) -> dict[str, Any]:
    """An Anthropic message as a ``chat.completion``."""
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise UpstreamError(502, "the upstream sent a message without content blocks")
    text, calls = [], []
    for block in data["content"]:
        if not isinstance(block, dict):
            raise UpstreamError(502, "the upstream sent a content block that is not an object")
        if block.get("type") == "text":
            text.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    usage = data.get("usage") or {}
    finish = _ANTHROPIC_STOP.get(str(data.get("stop_reason")), "stop")
    return {
        "id": data.get("id"),
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": _usage(usage.get("input_tokens"), usage.get("output_tokens")),
    }


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"object": "chat.completion.chunk", "choices": [choice], **extra}


class AnthropicChunks:
    """Anthropic stream events in, ``chat.completion.chunk`` dicts out."""

    def __init__(self) -> None:
        self._calls: dict[int, int] = {}  # content block index -> tool call index
        self._input_tokens = 0
        self.done = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks one event stands for (often none)."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._input_tokens = int((message.get("usage") or {}).get("input_tokens") or 0)
            return [_chunk({"role": "assistant"}, id=message.get("id"))]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use":
                return []
            index = self._calls[int(event.get("index", 0))] = len(self._calls)
            call = {"index": index, "id": block.get("id"), "type": "function"}
            call["function"] = {"name": block.get("name"), "arguments": ""}
            return [_chunk({"tool_calls": [call]})]
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [_chunk({"content": str(delta.get("text", ""))})]
            if delta.get("type") == "input_json_delta":
                index = self._calls.get(int(event.get("index", 0)), 0)
                part = {
                    "index": index,
                    "function": {"arguments": str(delta.get("partial_json", ""))},
                }
                return [_chunk({"tool_calls": [part]})]
            return []
        if kind == "message_delta":
            finish = _ANTHROPIC_STOP.get(str((event.get("delta") or {}).get("stop_reason")), "stop")
            output = (event.get("usage") or {}).get("output_tokens")
            return [_chunk({}, finish, usage=_usage(self._input_tokens, output))]
        if kind == "message_stop":
            self.done = True
        elif kind == "error":
            message = (event.get("error") or {}).get("message", "the stream failed")
            raise UpstreamError(502, f"upstream error: {message}")
        return []


# --- OpenAI Responses --------------------------------------------------------------------------


def _responses_input(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            instructions.append(_text(message.get("content")))
        elif role == "tool":
            output = _text(message.get("content"))
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": output,
                }
            )
        else:
            if text := _text(message.get("content")):
                items.append(
                    {"role": "assistant" if role == "assistant" else "user", "content": text}
                )
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments") or "{}",
                    }
                )
    return "\n\n".join(i for i in instructions if i), items


def responses_request(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """A Chat Completions payload as an OpenAI Responses request (``store: false``)."""
    instructions, items = _responses_input(payload.get("messages") or [])
    body: dict[str, Any] = {"model": model, "input": items, "store": False}
    if instructions:
        body["instructions"] = instructions
    for name in ("temperature", "top_p", "stream", "parallel_tool_calls"):
        if payload.get(name) is not None:
            body[name] = payload[name]
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if max_tokens:
        body["max_output_tokens"] = max_tokens
    if payload.get("tools"):
        body["tools"] = [
            {
                "type": "function",
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "parameters": t["function"].get("parameters") or {"type": "object"},
            }
            for t in payload["tools"]
        ]
    choice = payload.get("tool_choice")
    if isinstance(choice, dict):
        body["tool_choice"] = {
            "type": "function",
            "name": (choice.get("function") or {}).get("name"),
        }
    elif choice is not None:
        body["tool_choice"] = choice
    return body


def chat_from_responses(data: Any) -> dict[str, Any]:
    """A Responses ``response`` as a ``chat.completion``."""
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        raise UpstreamError(502, "the upstream sent a response without output")
    text, calls = [], []
    for item in data["output"]:
        if not isinstance(item, dict):
            raise UpstreamError(502, "the upstream sent an output item that is not an object")
        if item.get("type") == "message":
            text += [_text([p]) for p in item.get("content") or [] if isinstance(p, dict)]
        elif item.get("type") == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}
            calls.append({"id": item.get("call_id"), "type": "function", "function": function})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    usage = data.get("usage") or {}
    finish = "tool_calls" if calls else "length" if data.get("status") == "incomplete" else "stop"
    return {
        "id": data.get("id"),
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": _usage(usage.get("input_tokens"), usage.get("output_tokens")),
    }


class ResponsesChunks:
    """Responses stream events in, ``chat.completion.chunk`` dicts out."""

    def __init__(self) -> None:
        self._calls: dict[str, int] = {}  # output item id -> tool call index
        self.done = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks one event stands for (often none)."""
        kind = event.get("type")
        if kind == "response.created":
            return [_chunk({"role": "assistant"}, id=(event.get("response") or {}).get("id"))]
        if kind == "response.output_text.delta":
            return [_chunk({"content": str(event.get("delta", ""))})]
        if kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") != "function_call":
                return []
            index = self._calls[str(item.get("id"))] = len(self._calls)
            call = {"index": index, "id": item.get("call_id"), "type": "function"}
            call["function"] = {"name": item.get("name"), "arguments": ""}
            return [_chunk({"tool_calls": [call]})]
        if kind == "response.function_call_arguments.delta":
            index = self._calls.get(str(event.get("item_id")), 0)
            part = {"index": index, "function": {"arguments": str(event.get("delta", ""))}}
            return [_chunk({"tool_calls": [part]})]
        if kind in ("response.completed", "response.incomplete"):
            self.done = True
            response = event.get("response") or {}
            usage = response.get("usage") or {}
            finish = (
                "tool_calls" if self._calls else "length" if kind.endswith("incomplete") else "stop"
            )
            return [
                _chunk(
                    {}, finish, usage=_usage(usage.get("input_tokens"), usage.get("output_tokens"))
                )
            ]
        if kind in ("response.failed", "error"):
            error = (event.get("response") or {}).get("error") or event
            raise UpstreamError(
                502, f"upstream error: {error.get('message', 'the response failed')}"
            )
        return []
