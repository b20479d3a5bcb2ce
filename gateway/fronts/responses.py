"""``POST /v1/responses``: the OpenAI Responses API over the shared tool loop.

The request is translated onto the proxy's Chat Completions turn: ``instructions`` becomes the
first system message (after the agent's own prompt); ``input`` — a string, or items: messages,
``function_call`` (an assistant message's ``tool_calls``), ``function_call_output`` (a tool
message) — the messages; client function tools become Chat function tools (merged with the
agent's as on the chat front); ``tool_choice`` and ``text.format`` (as ``response_format``)
are passed on. ``previous_response_id`` prepends the stored conversation of that response
(:mod:`gateway.stores.responses`) and continues its gateway conversation; ``store`` (default
true, as at OpenAI) keeps this response for the next one.

The answer is a ``response`` object whose ``output`` holds the assistant's text as a ``message``
item and the calls the client must answer (its own tools, forms, buttons, confirmations) as
``function_call`` items; calls the gateway ran itself are not output items (the client could not
run them) but are in ``actiongate.executions`` and in the stored conversation. Streamed, it is
the Responses event stream (``response.created`` … ``response.completed``). Errors leave in
OpenAI's shape.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

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
from gateway.stores.responses import ResponseStore

__all__ = ["PATH", "ResponsesBackend", "chat_body", "create_response"]

PATH = "/v1/responses"
_PASSTHROUGH = {
    "temperature": "temperature",
    "top_p": "top_p",
    "parallel_tool_calls": "parallel_tool_calls",
    "max_output_tokens": "max_tokens",
    "user": "user",
    "safety_identifier": "safety_identifier",
    "prompt_cache_key": "prompt_cache_key",
    "service_tier": "service_tier",
    "top_logprobs": "top_logprobs",
}
_IGNORED = frozenset({"include", "truncation", "stream_options", "background", "metadata"})
_OWN = frozenset({"model", "input", "instructions", "tools", "tool_choice", "text", "stream"})
_OWN |= {"store", "previous_response_id", "conversation", "reasoning"}
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


class ResponsesBackend(Backend, Protocol):
    """A backend that also stores responses."""

    @property
    def responses(self) -> ResponseStore: ...


def _fail(message: str, param: str | None = None) -> RequestError:
    return RequestError(400, message, "invalid_request", param=param)


def _kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else type(value).__name__
    return str(kind)[:40]


def _text(content: Any, where: str) -> str:
    """The text of a message's content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _fail(f"{where}: content must be a string or a list of parts", where)
    parts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS:
            raise _fail(f"{where}[{i}]: part type {_kind(part)!r} is not supported", where)
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def _call(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
        raise _fail(f"{where}: a function_call needs a call_id and a name", where)
    arguments = item.get("arguments")
    arguments = arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def input_messages(raw: Any) -> list[dict[str, Any]]:
    """The Chat Completions messages ``input`` stands for."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise _fail("input: must be a string or a list of items", "input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _fail(f"{where}: must be an object", where)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _fail(f"{where}.role: {str(role)[:32]!r} is not a message role", where)
            out.append({"role": role, "content": _text(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            call = _call(item, where)
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # one assistant turn, many calls
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text(output, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id")), "content": text})
        elif kind != "reasoning":  # a reasoning summary is the upstream's business
            raise _fail(f"{where}: item type {str(kind)[:40]!r} is not supported", where)
    return out


def _tools(raw: Any) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _fail("tools: must be a list", "tools")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise _fail(
                f"tools[{i}]: tool type {_kind(tool)!r} is not supported (function tools only)",
                f"tools[{i}]",
            )
        function = {
            "name": tool.get("name"),
            "description": tool.get("description") or "",
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(raw: Any) -> Any:
    if raw is None or raw in ("auto", "none", "required"):
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function":
        return {"type": "function", "function": {"name": raw.get("name")}}
    raise _fail(f"tool_choice: {_kind(raw)!r} is not supported", "tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None or _kind(fmt) == "text":
        return None
    if _kind(fmt) == "json_object":
        return {"type": "json_object"}
    if _kind(fmt) == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _fail(f"text.format: type {_kind(fmt)!r} is not supported", "text.format")


def _conversation(body: dict[str, Any], previous: str | None) -> Any:
    """The gateway ``conversation`` object: ours, OpenAI's id form, or the previous response's."""
    conversation = body.get("conversation")
    if isinstance(conversation, str):
        conversation = {"id": conversation}
    if previous is None:
        return conversation
    if conversation is None:
        return {"id": previous}
    if isinstance(conversation, dict):
        if conversation.get("id", previous) != previous:
            raise _fail(
                "conversation.id differs from the conversation of previous_response_id",
                "conversation",
            )
        return {**conversation, "id": previous}
    return conversation  # not an object: the proxy names the error


def chat_body(
    body: dict[str, Any], history: list[dict[str, Any]], previous_conversation: str | None
) -> dict[str, Any]:
    """The Chat Completions body a Responses request stands for (``history`` goes first)."""
    messages = [*history, *input_messages(body.get("input"))]
    instructions = body.get("instructions")
    if instructions:
        messages.insert(0, {"role": "system", "content": _text(instructions, "instructions")})
    if not messages:
        raise _fail("input: at least one item is required", "input")
    chat: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "stream": bool(body.get("stream")),
    }
    if chat["stream"]:
        chat["stream_options"] = {"include_usage": True}  # response.completed reports usage
    for name, target in _PASSTHROUGH.items():
        if body.get(name) is not None:
            chat[target] = body[name]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    tools, choice = _tools(body.get("tools")), _tool_choice(body.get("tool_choice"))
    fmt = _response_format(body.get("text"))
    for name, value in (("tools", tools), ("tool_choice", choice), ("response_format", fmt)):
        if value is not None:
            chat[name] = value
    conversation = _conversation(body, previous_conversation)
    if conversation is not None:
        chat["conversation"] = conversation
    for name in sorted(set(body) - _OWN - _IGNORED - set(_PASSTHROUGH)):
        raise _fail(f"field {name[:64]!r} is not supported by this gateway", name[:64])
    if body.get("background"):
        raise _fail("background: background responses are not supported", "background")
    return chat


# --- the answer ---------------------------------------------------------------------------


def _usage(turn: Turn) -> dict[str, Any]:
    usage = turn.usage or {}
    prompt, completion = (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


class _Answer:
    """The ``response`` object under construction, shared by both answer modes."""

    def __init__(self, body: dict[str, Any], turn: Turn) -> None:
        self.id = f"resp_{random_hex(16)}"
        self.created = int(time.time())
        self.body = body
        self.turn = turn

    def response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        body, finish = self.body, self.turn.final[1]
        incomplete = status == "completed" and finish == "length"
        fmt = (body.get("text") or {}).get("format") or {"type": "text"}
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": "incomplete" if incomplete else status,
            "model": self.turn.agent.config.id,
            "output": output,
            "instructions": body.get("instructions"),
            "metadata": body.get("metadata") or {},
            "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": body.get("tools") or [],
            "text": {"format": fmt},
            "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store", True) is not False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "usage": _usage(self.turn) if status != "in_progress" else None,
        }

    def items(self) -> list[dict[str, Any]]:
        """The output items: the text, then the calls the client must answer."""
        message = self.turn.final[0]
        items = [_message_item(str(message["content"]))] if message.get("content") else []
        return items + [_call_item(call) for call in client_calls(self.turn)]


def _message_item(text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "id": f"msg_{random_hex(16)}",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [part] if status == "completed" else [],
    }


def _call_item(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "id": f"fc_{random_hex(16)}",
        "type": "function_call",
        "call_id": call.get("id"),
        "name": function.get("name"),
        "arguments": function.get("arguments") or "{}",
        "status": "completed",
    }


def _transcript(turn: Turn, lead: int) -> list[dict[str, Any]]:
    """The conversation to store: every message after the ``lead`` system prompts, the
    gateway's rounds and the final answer included."""
    messages = list(turn.messages[lead:])
    seen = {id(m) for m in messages}
    final = turn.final[0]
    for message in [*turn.produced, final]:
        if id(message) not in seen and message:
            seen.add(id(message))
            messages.append(message)
    return messages


async def _store(backend: ResponsesBackend, answer: _Answer, lead: int) -> None:
    if answer.body.get("store", True) is False:
        return
    turn = answer.turn
    await backend.responses.save(
        answer.id, turn.agent.config.id, turn.conversation.id, _transcript(turn, lead)
    )


# --- the event stream ---------------------------------------------------------------------


def _sse(kind: str, sequence: Iterator[int], **data: Any) -> bytes:
    event = {"type": kind, "sequence_number": next(sequence), **data}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def _events(
    answer: _Answer, first: str | None, deltas: AsyncIterator[str], store: Callable[[], Any]
) -> AsyncIterator[bytes]:
    seq = iter(range(1 << 62))
    opening = _sse("response.created", seq, response=answer.response("in_progress", []))
    opening += _sse("response.in_progress", seq, response=answer.response("in_progress", []))
    output: list[dict[str, Any]] = []
    try:
        if first is not None:
            async for chunk in _text_events(seq, first, deltas, output):
                # The opening events leave with the first text: one write, not five.
                yield opening + chunk
                opening = b""
        if opening:
            yield opening
            opening = b""
        for call in client_calls(answer.turn):
            for chunk in _call_events(seq, _call_item(call), output):
                yield chunk
        await store()
        response = {**answer.response("completed", output), "actiongate": answer.turn.extension()}
        yield _sse("response.completed", seq, response=response)
    except (UpstreamError, RequestError) as e:
        code = e.code if isinstance(e, RequestError) else "upstream_error"
        error = {"type": "server_error", "code": code, "message": str(e), "param": None}
        yield opening + _sse("error", seq, code=code, message=str(e), param=None, error=error)


async def _text_events(
    seq: Iterator[int], first: str, deltas: AsyncIterator[str], output: list[dict[str, Any]]
) -> AsyncIterator[bytes]:
    item = _message_item("", status="in_progress")
    index = len(output)
    head = _sse("response.output_item.added", seq, output_index=index, item=item)
    place = {"item_id": item["id"], "output_index": index, "content_index": 0}
    part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    head += _sse("response.content_part.added", seq, **place, part=part)
    text = [first]
    yield head + _sse("response.output_text.delta", seq, **place, delta=first, logprobs=[])
    async for delta in deltas:
        text.append(delta)
        yield _sse("response.output_text.delta", seq, **place, delta=delta, logprobs=[])
    part["text"] = "".join(text)
    yield _sse("response.output_text.done", seq, **place, text=part["text"], logprobs=[])
    yield _sse("response.content_part.done", seq, **place, part=part)
    done = {**item, "status": "completed", "content": [part]}
    output.append(done)
    yield _sse("response.output_item.done", seq, output_index=index, item=done)


def _call_events(
    seq: Iterator[int], item: dict[str, Any], output: list[dict[str, Any]]
) -> Iterator[bytes]:
    index = len(output)
    added = {**item, "arguments": "", "status": "in_progress"}
    yield _sse("response.output_item.added", seq, output_index=index, item=added)
    place = {"item_id": item["id"], "output_index": index}
    yield _sse("response.function_call_arguments.delta", seq, **place, delta=item["arguments"])
    yield _sse(
        "response.function_call_arguments.done",
        seq,
        **place,
        name=item["name"],
        arguments=item["arguments"],
    )
    output.append(item)
    yield _sse("response.output_item.done", seq, output_index=index, item=item)


# --- the route ----------------------------------------------------------------------------


async def _previous(
    backend: ResponsesBackend, body: dict[str, Any], agent_id: str
) -> tuple[list[dict[str, Any]], str | None]:
    previous = body.get("previous_response_id")
    if previous is None:
        return [], None
    if not isinstance(previous, str) or not previous:
        raise _fail("previous_response_id: must be a response id", "previous_response_id")
    stored = await backend.responses.load(previous, agent_id)
    if stored is None:
        # The same answer for an id that never existed and one of another agent.
        raise RequestError(
            404,
            f"previous response {previous[:64]!r} not found for this agent",
            "previous_response_not_found",
            param="previous_response_id",
        )
    return stored.messages, stored.conversation_id


async def create_response(request: Request, backend: ResponsesBackend) -> Response:
    """OpenAI Responses, streamed or not, with the agent's actions as tools."""
    headers = header_map(request)
    key = bearer_token(headers.get("authorization"))
    refuse_unknown_key(backend, request, key)
    body = await read_json_body(request)
    if not isinstance(body, dict):
        raise _fail("the request body must be a JSON object")
    agent = backend.workspace.view(str(body.get("model") or ""))
    # An unknown agent gets the proxy's own error; no response is looked up for it.
    history, previous = await _previous(backend, body, agent.config.id) if agent else ([], None)
    turn = await open_turn(backend, request, chat_body(body, history, previous), headers, key)
    lead = (1 if turn.agent.config.system_prompt else 0) + (1 if body.get("instructions") else 0)
    answer = _Answer(body, turn)
    if turn.stream:
        deltas = backend.proxy.deltas(turn)
        first = await anext(deltas, None)  # an upstream failing at once is a plain HTTP error
        events = _events(answer, first, deltas, lambda: _store(backend, answer, lead))
        return await event_stream(events, summary_headers(turn, final=False))
    await backend.proxy.complete(turn)
    result = {**answer.response("completed", answer.items()), "actiongate": turn.extension()}
    await _store(backend, answer, lead)
    return Response(
        orjson.dumps(result), media_type="application/json", headers=summary_headers(turn)
    )
