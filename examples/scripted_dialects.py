"""The OpenAI Responses and Anthropic Messages dialects of the scripted upstream.

:mod:`examples.scripted_upstream` decides every reply once, on a Chat Completions view of the
request; this module stands in for the other two wire formats a real provider speaks:

* **Translators** (:func:`responses_to_chat`, :func:`messages_to_chat`) turn a ``POST
  /v1/responses`` or ``POST /v1/messages`` body into that view: ``messages`` with roles
  system/user/assistant/tool (assistant ``tool_calls``, tool ``tool_call_id``), ``tools`` as
  ``{"type": "function", "function": {"name", "description", "parameters"}}`` and
  ``tool_choice`` (``"none"`` when the request says none). Items and blocks the decisions do not
  read (images, reasoning, server tools) are left out; the body as received is what the upstream
  records.
* **Writers** turn a decided :class:`~examples.scripted_upstream.Plan` into the dialect's reply:
  a Responses ``response`` object (:func:`response_object`) or its server-sent events
  (:func:`response_events`: ``response.created`` … ``response.completed``, no ``[DONE]``), an
  Anthropic ``message`` (:func:`message_object`) or its events (:func:`message_events`:
  ``message_start`` … ``message_stop``), and each dialect's error shape.

Tool calls keep the plan's ids in Responses (``call_id``; the item ids are ``fc_...``). Anthropic
ids are ``toolu_...``: a plan id starting ``call_`` has that prefix replaced, any other id is kept.
An Anthropic ``input`` must be an object, so a scripted call whose ``arguments`` are not a JSON
object (malformed on purpose, say) is answered with ``"input": {}`` non-streamed, and its raw text
is streamed as-is in ``input_json_delta`` fragments, as a misbehaving model's would be.

Nothing here imports the gateway: the scripted upstream plays a real provider.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from examples.scripted_upstream import Plan, ToolCall

__all__ = [
    "ANTHROPIC",
    "ARGUMENT_FRAGMENT",
    "RESPONSES",
    "BadRequest",
    "Dialect",
    "Turn",
    "anthropic_error",
    "fragments",
    "message_events",
    "message_object",
    "messages_to_chat",
    "openai_error",
    "response_events",
    "response_object",
    "responses_to_chat",
    "words",
]

ARGUMENT_FRAGMENT = 12
"""Characters per streamed ``arguments`` fragment: small enough that every call is split."""
_WORDS = re.compile(r"\s*\S+|\s+$")
Event = dict[str, Any]


class BadRequest(ValueError):
    """A request the dialect refuses with a 400 (``param``: the field at fault, if one)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Turn:
    """One request being answered: the body as received, its chat view and what they share."""

    body: Mapping[str, Any]
    chat: Mapping[str, Any]
    usage: Mapping[str, int]
    """Chat-shaped token counts: ``prompt_tokens``, ``completion_tokens``, ``total_tokens``."""
    model: str
    created: int
    key: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    """The hex shared by this reply's ids (``resp_KEY``, ``msg_KEY``)."""


@dataclass(frozen=True)
class Dialect:
    """What the upstream needs to answer one wire format besides the shared decision."""

    to_chat: Callable[[Mapping[str, Any]], dict[str, Any]]
    """The chat view of a request body; raises :class:`BadRequest`."""
    error: Callable[[int, Mapping[str, Any]], dict[str, Any]]
    """The error body for a status and an OpenAI-shaped ``{message, type, param, code}``."""
    reply: Callable[[Plan, Turn], dict[str, Any]]
    events: Callable[[Plan, Turn], Iterator[Event]]
    """The streamed events; each one's ``type`` is also its SSE ``event:`` name."""


def words(text: str) -> list[str]:
    """Text the way tokens arrive: one word, with its leading whitespace, per piece."""
    return _WORDS.findall(text)


def fragments(text: str) -> Iterator[str]:
    """``text`` in :data:`ARGUMENT_FRAGMENT`-character pieces."""
    for start in range(0, len(text), ARGUMENT_FRAGMENT):
        yield text[start : start + ARGUMENT_FRAGMENT]


def _plain(content: Any) -> str:
    """The text of a string or of a list of text parts/blocks (other parts are left out)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, Mapping)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _function(name: Any, description: Any, parameters: Any) -> dict[str, Any]:
    function = {"name": name, "parameters": parameters if isinstance(parameters, Mapping) else {}}
    if isinstance(description, str):
        function["description"] = description
    return {"type": "function", "function": function}


# OpenAI Responses ------------------------------------------------------------------------------


def openai_error(status: int, error: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {message, type, param, code}}``."""
    return {"error": {"param": None, "code": None, **error}}


def _responses_item(messages: list[dict[str, Any]], item: Mapping[str, Any]) -> None:
    """Add one Responses input item to the chat ``messages``."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise BadRequest(f"Invalid value: {role!r}. Supported roles: user, assistant, ...")
        role = "system" if role == "developer" else role
        messages.append({"role": role, "content": _plain(item.get("content"))})
    elif kind == "function_call":
        function = {"name": item.get("name"), "arguments": item.get("arguments") or ""}
        call = {"id": item.get("call_id"), "type": "function", "function": function}
        last = messages[-1] if messages else {}
        if last.get("role") == "assistant":  # text and calls of one turn: one chat message
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = _plain(item.get("output"))
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": output})


def responses_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat view of a ``POST /v1/responses`` body (see the module docstring)."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise BadRequest("Missing required parameter: 'input'.", "input")
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise BadRequest(f"Invalid type for 'input[{i}]': expected an object.", f"input[{i}]")
        _responses_item(messages, item)
    tools = [
        _function(t.get("name"), t.get("description"), t.get("parameters"))
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and t.get("type") == "function"
    ]
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "tools": tools}
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    if choice is not None:
        chat["tool_choice"] = choice
    return chat


def _response_usage(usage: Mapping[str, int]) -> dict[str, Any]:
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }


def _response_items(plan: Plan, turn: Turn) -> list[dict[str, Any]]:
    """The completed output items: the text message (if any), then the function calls."""
    items: list[dict[str, Any]] = []
    if plan.content is not None and (plan.content or not plan.tool_calls):
        part = {"type": "output_text", "text": plan.content, "annotations": [], "logprobs": []}
        items.append(
            {
                "id": f"msg_{turn.key}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [part],
            }
        )
    for n, call in enumerate(plan.tool_calls):
        items.append(
            {
                "id": f"fc_{turn.key}_{n}",
                "type": "function_call",
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments,
                "status": "completed",
            }
        )
    return items


def _response_tools(body: Mapping[str, Any]) -> list[Any]:
    """The request's tools as a response echoes them (function tools with ``strict``)."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping)]
    return [
        {"description": None, "parameters": None, "strict": True, **t}
        if t.get("type") == "function"
        else dict(t)
        for t in tools
    ]


def _response(turn: Turn, output: list[dict[str, Any]], done: bool) -> dict[str, Any]:
    body = turn.body
    return {
        "id": f"resp_{turn.key}",
        "object": "response",
        "created_at": turn.created,
        "status": "completed" if done else "in_progress",
        "completed_at": turn.created if done else None,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": turn.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": _response_tools(body),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": _response_usage(turn.usage) if done else None,
        "user": body.get("user"),
    }


def response_object(plan: Plan, turn: Turn) -> dict[str, Any]:
    """The non-streamed Responses ``response`` object for ``plan``."""
    return _response(turn, _response_items(plan, turn), done=True)


def _item_events(item: dict[str, Any], index: int) -> Iterator[Event]:
    """The events of one output item, from ``output_item.added`` to ``output_item.done``."""
    at = {"item_id": item["id"], "output_index": index}
    if item["type"] == "message":
        opened = {**item, "status": "in_progress", "content": []}
        yield {"type": "response.output_item.added", "output_index": index, "item": opened}
        part = item["content"][0]
        at["content_index"] = 0
        yield {"type": "response.content_part.added", **at, "part": {**part, "text": ""}}
        for piece in words(part["text"]):
            yield {"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
        yield {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []}
        yield {"type": "response.content_part.done", **at, "part": part}
    else:
        opened = {**item, "arguments": "", "status": "in_progress"}
        yield {"type": "response.output_item.added", "output_index": index, "item": opened}
        for piece in fragments(item["arguments"]):
            yield {"type": "response.function_call_arguments.delta", **at, "delta": piece}
        done = {"name": item["name"], "arguments": item["arguments"]}
        yield {"type": "response.function_call_arguments.done", **at, **done}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def response_events(plan: Plan, turn: Turn) -> Iterator[Event]:
    """The Responses stream for ``plan``, in OpenAI's order, numbered by ``sequence_number``."""
    items = _response_items(plan, turn)

    def unnumbered() -> Iterator[Event]:
        yield {"type": "response.created", "response": _response(turn, [], done=False)}
        yield {"type": "response.in_progress", "response": _response(turn, [], done=False)}
        for index, item in enumerate(items):
            yield from _item_events(item, index)
        yield {"type": "response.completed", "response": _response(turn, items, done=True)}

    for number, event in enumerate(unnumbered()):
        yield {"type": event["type"], "sequence_number": number, **event}


RESPONSES = Dialect(responses_to_chat, openai_error, response_object, response_events)
"""``POST /v1/responses``."""


# Anthropic Messages ----------------------------------------------------------------------------

_ANTHROPIC_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, error: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's error body for a status and an OpenAI-shaped error.

    The ``type`` is the status's Anthropic one (``rate_limit_error`` for 429, ``api_error`` for
    other 5xx...) unless the error names another Anthropic type than the generic
    ``invalid_request_error`` (a scripted ``overloaded_error`` on a 503, say).
    """
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    kind = error.get("type")
    specific = {*_ANTHROPIC_KINDS.values(), "api_error"} - {"invalid_request_error"}
    if kind not in specific:
        kind = _ANTHROPIC_KINDS.get(status, fallback)
    return {"type": "error", "error": {"type": kind, "message": str(error.get("message", ""))}}


def _anthropic_message(messages: list[dict[str, Any]], role: Any, content: Any) -> None:
    """Add one Anthropic message to the chat ``messages`` (tool results become tool messages)."""
    if role not in ("user", "assistant"):
        raise BadRequest(f"messages: Unexpected role {role!r}", "messages")
    if isinstance(content, str):
        messages.append({"role": role, "content": content})
        return
    blocks = [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) else []
    calls, results = [], 0
    for block in blocks:
        if block.get("type") == "tool_result":
            results += 1
            text = _plain(block.get("content"))
            text = f"Error: {text}" if block.get("is_error") else text
            messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id")})
            messages[-1]["content"] = text
        elif block.get("type") == "tool_use":
            arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
    text = _plain([b for b in blocks if b.get("type") == "text"])
    if text or calls or not results:
        message: dict[str, Any] = {"role": role, "content": text or None}
        if calls:
            message["tool_calls"] = calls
        messages.append(message)


def messages_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat view of a ``POST /v1/messages`` body (see the module docstring)."""
    if "max_tokens" not in body:
        raise BadRequest("max_tokens: Field required", "max_tokens")
    if not isinstance(body.get("messages"), list):
        raise BadRequest("messages: Field required", "messages")
    messages: list[dict[str, Any]] = []
    if system := _plain(body.get("system")):
        messages.append({"role": "system", "content": system})
    for message in body["messages"]:
        if not isinstance(message, Mapping):
            raise BadRequest("messages: Input should be an object", "messages")
        _anthropic_message(messages, message.get("role"), message.get("content"))
    tools = [
        _function(t["name"], t.get("description"), t.get("input_schema"))
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and isinstance(t.get("name"), str) and "input_schema" in t
    ]
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "tools": tools}
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        named = {"type": "function", "function": {"name": choice.get("name")}}
        chat["tool_choice"] = {"any": "required", "tool": named}.get(str(kind), kind)
    return chat


def _tool_use_id(call: ToolCall) -> str:
    return "toolu_" + call.id.removeprefix("call_") if call.id.startswith("call_") else call.id


def _input(arguments: str) -> dict[str, Any] | None:
    """The arguments as an Anthropic ``input`` object; None when they are not a JSON object."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _text_block(plan: Plan) -> bool:
    """Whether the reply has a text block (an empty one only when it has nothing else)."""
    return plan.content is not None and bool(plan.content or not plan.tool_calls)


def _message(plan: Plan, turn: Turn, content: list[Any], output_tokens: int) -> dict[str, Any]:
    return {
        "id": f"msg_{turn.key}",
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": content,
        "stop_reason": ("tool_use" if plan.tool_calls else "end_turn") if content else None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": turn.usage["prompt_tokens"],
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def message_object(plan: Plan, turn: Turn) -> dict[str, Any]:
    """The non-streamed Anthropic ``message`` for ``plan``."""
    content: list[Any] = [{"type": "text", "text": plan.content}] if _text_block(plan) else []
    for call in plan.tool_calls:
        block = {"type": "tool_use", "id": _tool_use_id(call), "name": call.name}
        content.append({**block, "input": _input(call.arguments) or {}})
    return _message(plan, turn, content, turn.usage["completion_tokens"])


def message_events(plan: Plan, turn: Turn) -> Iterator[Event]:
    """The Anthropic stream for ``plan``: ``message_start`` … ``message_stop``."""
    yield {"type": "message_start", "message": _message(plan, turn, [], 1)}
    index = 0
    if _text_block(plan):
        empty = {"type": "text", "text": ""}
        yield {"type": "content_block_start", "index": 0, "content_block": empty}
        for piece in words(plan.content or ""):
            delta = {"type": "text_delta", "text": piece}
            yield {"type": "content_block_delta", "index": 0, "delta": delta}
        yield {"type": "content_block_stop", "index": 0}
        index = 1
    for n, call in enumerate(plan.tool_calls, start=index):
        block = {"type": "tool_use", "id": _tool_use_id(call), "name": call.name, "input": {}}
        yield {"type": "content_block_start", "index": n, "content_block": block}
        for piece in fragments(call.arguments):  # as-is, even when it is not JSON
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield {"type": "content_block_delta", "index": n, "delta": delta}
        yield {"type": "content_block_stop", "index": n}
    stop = {"stop_reason": "tool_use" if plan.tool_calls else "end_turn", "stop_sequence": None}
    usage = {"output_tokens": turn.usage["completion_tokens"]}
    yield {"type": "message_delta", "delta": stop, "usage": usage}
    yield {"type": "message_stop"}


ANTHROPIC = Dialect(messages_to_chat, anthropic_error, message_object, message_events)
"""``POST /v1/messages``."""
