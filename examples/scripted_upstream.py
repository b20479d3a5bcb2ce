"""A scripted LLM provider for tests, the offline demo and benchmarks.

It speaks three wire formats on one app, each with its own objects, server-sent events and error
shape:

* ``POST /v1/chat/completions``: OpenAI Chat Completions (``chat.completion`` objects,
  ``chat.completion.chunk`` events ending in ``data: [DONE]``);
* ``POST /v1/responses``: the OpenAI Responses API (a ``response`` object, or ``response.*``
  events from ``response.created`` to ``response.completed``);
* ``POST /v1/messages``: the Anthropic Messages API (a ``message``, or ``message_start`` …
  ``message_stop`` events; ``max_tokens`` is required, as there).

The last two are translated to a Chat Completions view of the request
(:mod:`examples.scripted_dialects`), so every path shares one decision, made in this order:

1. **Queue** (tests): replies appended with ``POST /_script`` ``{"replies": [REPLY, ...]}`` (or
   :meth:`ScriptedUpstream.script`) are answered first-in, first-out. A REPLY is one of::

       {"content": "text"}
       {"tool_calls": [{"name": "look_up_order", "arguments": {...} | "raw", "id"?: "call_1"}],
        "content"?: "text"}
       {"error": {"status": 500, "message": "...", "type"?: "...", "code"?: "..."}}

   plus optional knobs: ``delay_s`` (wait before answering), ``chunk_delay_s`` (wait between
   streamed chunks) and ``disconnect`` (drop the connection after :data:`DISCONNECT_AFTER`
   streamed events). A reply is written in the dialect of the path that asks: an ``error`` in
   that provider's error shape, a tool call as a ``function_call`` item or a ``tool_use`` block.
2. **Fixed tool** (benchmarks, zero added latency): header ``X-Mock-Tool: NAME`` (arguments from
   ``X-Mock-Args``, JSON, passed on as sent) or ``create_app(fixed_tool=...)`` / ``--tool NAME``
   asks for a call to NAME when the request offers tools and does not end with a tool result
   (a ``function_call_output`` item, a ``tool_result`` block).
3. **Rules** (demo, ``--rules``): :func:`rule_reply` picks a tool the way a plausible support
   model would, from the tools the request offers, and leaves out a tool whose "When NOT to
   use" text has a phrase it recognises (:data:`GUARDRAILS`: no order number, no email, a
   general question, the refund policy, no clear refund request, a support problem) when the
   message is such a case — so ``actiongate eval`` has a model whose choices follow guardrails.
4. Otherwise the fixed text :data:`FIXED_TEXT`.

``GET /_requests`` lists every model request body received, as sent, on any of the three paths
(:attr:`ScriptedUpstream.paths` says which path each came to); ``POST /_reset`` clears the queue
and those lists and answers ``{"ok": true, "dropped": N}``, N being the queued replies no request
used. With an API key set, ``/v1`` wants ``Authorization: Bearer KEY`` (``/v1/messages`` takes
Anthropic's ``x-api-key: KEY`` too) and refuses others with a 401 in the path's error shape.

Tests sharing one upstream start each test with a reset (or :meth:`ScriptedUpstream.isolated`,
which also fails the test that leaves a reply unused), so a reply one test queued can never
answer a later test. Run it with ``python -m examples.scripted_upstream --port 8091 [--rules]
[--api-key KEY]``; the OpenAI base URL is ``http://HOST:PORT/v1``, Anthropic's ``http://HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from examples.scripted_dialects import (
    ANTHROPIC,
    ARGUMENT_FRAGMENT,
    RESPONSES,
    BadRequest,
    Dialect,
    Turn,
    anthropic_error,
    fragments,
    words,
)

__all__ = [
    "ARGUMENT_FRAGMENT",
    "FIXED_TEXT",
    "Plan",
    "ScriptState",
    "ScriptedUpstream",
    "create_app",
    "main",
    "parse_reply",
    "rule_reply",
    "running_upstream",
]

FIXED_TEXT = "This is a scripted reply."
MODEL = "scripted"
DISCONNECT_AFTER = 3
"""Chunks (or events) written before a ``disconnect`` reply drops the connection."""


@dataclass
class ToolCall:
    """One function call the model makes."""

    id: str
    name: str
    arguments: str


@dataclass
class Plan:
    """A validated reply, ready to be written as a completion or a stream."""

    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: dict[str, Any] | None = None
    status: int = 200
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    disconnect: bool = False

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


@dataclass
class ScriptState:
    """What the handlers share: the reply queue, the request log and the mode."""

    rules: bool = False
    api_key: str | None = None
    fixed_tool: str | None = None
    fixed_args: dict[str, Any] = field(default_factory=dict)
    queue: deque[Plan] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    """The path each of ``requests`` came to (``/v1/chat/completions``, ``/v1/responses``...)."""

    def clear(self) -> int:
        """Forget queued replies and received requests; how many queued replies were unused."""
        dropped = len(self.queue)
        self.queue.clear()
        self.requests.clear()
        self.headers.clear()
        self.paths.clear()
        return dropped


STATE = web.AppKey("scripted_state", ScriptState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_reply(raw: Any) -> Plan:
    """Validate one scripted REPLY (see the module docstring).

    Raises:
        ValueError: the reply does not have one of the documented shapes.
    """
    if not isinstance(raw, Mapping):
        raise ValueError("a reply must be an object")
    plan = Plan(
        delay_s=float(raw.get("delay_s", 0.0)),
        chunk_delay_s=float(raw.get("chunk_delay_s", 0.0)),
        disconnect=bool(raw.get("disconnect", False)),
    )
    if "error" in raw:
        err = raw["error"]
        if not isinstance(err, Mapping) or "message" not in err:
            raise ValueError("error: expected {status, message, type?, code?}")
        plan.status = int(err.get("status", 500))
        kind = err.get("type") or (
            "server_error" if plan.status >= 500 else "invalid_request_error"
        )
        plan.error = {"message": str(err["message"]), "type": kind, "param": None}
        plan.error["code"] = err.get("code")
        return plan
    content = raw.get("content")
    if content is not None and not isinstance(content, str):
        raise ValueError("content: expected a string")
    plan.content = content
    for i, call in enumerate(raw.get("tool_calls") or []):
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise ValueError(f"tool_calls[{i}]: expected {{name, arguments?, id?}}")
        args = call.get("arguments", {})
        text = args if isinstance(args, str) else json.dumps(args, separators=(",", ":"))
        plan.tool_calls.append(ToolCall(str(call.get("id") or _call_id()), call["name"], text))
    if plan.content is None and not plan.tool_calls:
        raise ValueError("a reply needs content, tool_calls or error")
    return plan


def _describe(plan: Plan) -> str:
    """A short description of a queued reply, for the error naming unused ones."""
    if plan.error is not None:
        return f"error {plan.status}"
    calls = ", ".join(call.name for call in plan.tool_calls)
    return f"tool_calls [{calls}]" if calls else f"content {plan.content!r:.60}"


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _openai_error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _usage(body: Mapping[str, Any], plan: Plan) -> dict[str, int]:
    prompt = _estimate_tokens(json.dumps(body.get("messages", [])))
    out = (plan.content or "") + "".join(c.name + c.arguments for c in plan.tool_calls)
    completion = _estimate_tokens(out)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(plan: Plan, body: Mapping[str, Any], cid: str, created: int) -> dict[str, Any]:
    """The non-streamed ``chat.completion`` object for ``plan``."""
    message: dict[str, Any] = {"role": "assistant", "content": plan.content, "refusal": None}
    message["annotations"] = []
    if plan.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in plan.tool_calls
        ]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": str(body.get("model") or MODEL),
        "choices": [choice],
        "usage": _usage(body, plan),
    }


def stream_chunks(
    plan: Plan, body: Mapping[str, Any], cid: str, created: int
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects for ``plan``, in OpenAI's order."""
    options = body.get("stream_options") or {}
    include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
    model = str(body.get("model") or MODEL)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            out["usage"] = None
        return out

    first_content = "" if plan.content is not None or not plan.tool_calls else None
    yield chunk({"role": "assistant", "content": first_content, "refusal": None})
    # Text arrives the way tokens do: one word, with its leading whitespace, per chunk.
    for piece in words(plan.content or ""):
        yield chunk({"content": piece})
    for index, call in enumerate(plan.tool_calls):
        function = {"name": call.name, "arguments": ""}
        head = {"index": index, "id": call.id, "type": "function", "function": function}
        yield chunk({"tool_calls": [head]})
        for fragment in fragments(call.arguments):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    yield chunk({}, plan.finish_reason)
    if include_usage:
        last = chunk({})
        last["choices"] = []
        last["usage"] = _usage(body, plan)
        yield last


# Rules: a plausible support model for the offline demo. Each rule is (trigger found in the last
# user message, substring of the tool name to call); the first rule with a callable tool wins.
ORDER_NUMBER = re.compile(r"\b[A-Z]-\d{5}\b")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\brefund", re.IGNORECASE), "refund"),
    (re.compile(r"\breturn", re.IGNORECASE), "return"),
    (re.compile(r"\bdemo\b", re.IGNORECASE), "demo"),
    (ORDER_NUMBER, "order"),
    (EMAIL, "customer"),
)
# Guardrails the rules read: (a phrase in a tool's "When NOT to use:" text, whether the last user
# message then rules the tool out). A guardrail the rules do not recognise changes nothing, as a
# careless model would ignore it; editing one into or out of a description changes the choice.
_I = re.IGNORECASE
_CLEAR_REFUND = re.compile(
    r"\b(i want|i'd like|i would like|please|give me|can i (get|have)|i need)\b[^.?!]*\brefund"
    r"|\brefund (me|my|it|this)\b",
    _I,
)
_PROBLEM = re.compile(
    r"\b(broken|problem|issue|not working|doesn't work|damaged|missing|late|error|my order)\b", _I
)
GUARDRAILS: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = (
    (
        re.compile(r"without an order number|(not|n't) (provided|given) (an|the|their) order", _I),
        lambda text: not ORDER_NUMBER.search(text),
    ),
    (
        re.compile(r"(not|n't) (provided|given) (an|the|their) email|without an email", _I),
        lambda text: not EMAIL.search(text),
    ),
    (
        re.compile(r"general question", _I),
        lambda text: (
            text.rstrip().endswith("?") and not ORDER_NUMBER.search(text) and not EMAIL.search(text)
        ),
    ),
    (re.compile(r"refund policy", _I), lambda text: "policy" in text.lower()),
    (
        re.compile(r"unless .*(clearly|explicitly) asked for a refund", _I),
        lambda text: not _CLEAR_REFUND.search(text),
    ),
    (re.compile(r"support problem", _I), lambda text: bool(_PROBLEM.search(text))),
)
_WHEN_NOT = "When NOT to use:"


def guardrail_blocks(description: str, text: str) -> bool:
    """Whether a recognised phrase of the tool's guardrail rules it out for this message."""
    _, found, guardrail = description.partition(_WHEN_NOT)
    if not found:
        return False
    return any(phrase.search(guardrail) and blocks(text) for phrase, blocks in GUARDRAILS)


_DATA_BLOCK = re.compile(r"<data>\n?(.*?)\n?</data>", re.DOTALL)
_FAILURE = re.compile(r"\b(failed|not run|not sent|declined|refused|blocked|error)\b", re.I)


def last_message(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The last message of a request body (empty when there is none)."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    return last if isinstance(last, Mapping) else {}


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return content if isinstance(content, str) else ""


def _arguments(schema: Mapping[str, Any], text: str) -> dict[str, Any] | None:
    """Arguments found in ``text`` for this schema; None when a required one is missing."""
    facts = {}
    if order := ORDER_NUMBER.search(text):
        facts["order_number"] = order.group()
    if email := EMAIL.search(text):
        facts["email"] = email.group()
    required = schema.get("required") or []
    args: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        enum = prop.get("enum") if isinstance(prop, Mapping) else None
        if name in facts:
            args[name] = facts[name]
        elif enum:
            said = [v for v in enum if str(v).replace("_", " ").lower() in text.lower()]
            if said or name in required:
                args[name] = (said or enum)[0]
    return None if any(r not in args for r in required) else args


def _flat(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{str(k).replace('_', ' ')} {_flat(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "none" if value is None else str(value)


def _summarise(content: str) -> str:
    """A short friendly sentence about a tool result (or the error it reports)."""
    block = _DATA_BLOCK.search(content)
    headline = content[: block.start()] if block else content
    try:
        data = json.loads(block.group(1) if block else content)
    except ValueError:
        data = None
    if _FAILURE.search(headline) or (isinstance(data, Mapping) and "error" in data):
        detail = (
            f" ({_flat(data['error'])})" if isinstance(data, Mapping) and "error" in data else ""
        )
        first_line = headline.strip().splitlines()[0] if headline.strip() else "it failed"
        first_line = first_line.split(" The API's response")[0]  # the gateway's data notice
        return f"Sorry, I could not do that: {first_line[:300]}{detail}"
    if isinstance(data, Mapping):
        facts = list(data.items())[:5]
        found = "; ".join(f"{str(k).replace('_', ' ')}: {_flat(v)}" for k, v in facts)
    else:
        found = _flat(data) if data is not None else (block.group(1) if block else content)
    return f"Here is what I found: {found.strip()[:300].rstrip('.')}."


def rule_reply(body: Mapping[str, Any]) -> dict[str, Any]:
    """A REPLY like a support model's, using only the tools this request offers."""
    last = last_message(body)
    if last.get("role") == "tool":
        return {"content": _summarise(_text(last.get("content")))}
    users = [m for m in body.get("messages") or [] if isinstance(m, Mapping)]
    users = [m for m in users if m.get("role") == "user"]
    text = _text(users[-1].get("content")) if users else ""
    tools: dict[str, Mapping[str, Any]] = {}
    blocked: set[str] = set()
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            tools[function["name"]] = function.get("parameters") or {}
            if guardrail_blocks(str(function.get("description") or ""), text):
                blocked.add(function["name"])
    for trigger, hint in RULES:
        if not trigger.search(text):
            continue
        fits = [
            (n, a)
            for n, s in tools.items()
            if hint in n and n not in blocked and (a := _arguments(s, text)) is not None
        ]
        if fits:
            name, args = max(fits, key=lambda fit: len(fit[1]))  # the most specific tool
            return {"tool_calls": [{"name": name, "arguments": args}]}
    if not tools:
        return {"content": "Hi! How can I help you today?"}
    skills = ", ".join(name.replace("_", " ") for name in tools)
    return {"content": f"Hi! I can help with: {skills}. What do you need?"}


def _choose(state: ScriptState, request: web.Request, body: Mapping[str, Any]) -> Plan:
    """The reply for this request: queue, then fixed tool, then rules, then fixed text."""
    if state.queue:
        return state.queue.popleft()
    if body.get("tool_choice") == "none":  # a real model cannot call tools then either
        body = {**body, "tools": []}
    tool = request.headers.get("X-Mock-Tool") or state.fixed_tool
    if tool and body.get("tools") and last_message(body).get("role") != "tool":
        # X-Mock-Args is passed on unparsed, so benchmarks can send malformed arguments too.
        args = request.headers.get("X-Mock-Args") or json.dumps(state.fixed_args)
        return Plan(tool_calls=[ToolCall(_call_id(), tool, args)])
    if state.rules:
        return parse_reply(rule_reply(body))
    return Plan(content=FIXED_TEXT)


def _key_matches(request: web.Request, expected: str) -> bool:
    """Whether the request carries ``expected``: as a bearer key, or Anthropic's ``x-api-key``."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(key.strip(), expected):
        return True
    anthropic_key = request.headers.get("x-api-key")
    return (
        request.path.startswith("/v1/messages")
        and anthropic_key is not None
        and hmac.compare_digest(anthropic_key.strip(), expected)
    )


@web.middleware
async def _require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 401 on ``/v1`` without the right key, in the shape of the path's provider."""
    expected = request.app[STATE].api_key
    guarded = expected is not None and request.path.startswith("/v1/")
    if guarded and not _key_matches(request, expected or ""):
        if request.path.startswith("/v1/messages"):
            error = {"type": "authentication_error", "message": "invalid x-api-key"}
            return web.json_response(anthropic_error(401, error), status=401)
        message = "Incorrect API key provided."
        return _openai_error(401, message, "invalid_request_error", "invalid_api_key")
    return await handler(request)


def _record(request: web.Request, body: dict[str, Any]) -> None:
    state = request.app[STATE]
    state.requests.append(body)
    state.headers.append(dict(request.headers))
    state.paths.append(request.path)


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


async def _stream(
    request: web.Request, plan: Plan, frames: Iterable[bytes], trailer: bytes = b""
) -> web.StreamResponse:
    """Write server-sent event ``frames`` with the plan's pacing, dropping it if asked to."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    response.headers["Cache-Control"] = "no-cache"
    await response.prepare(request)
    for n, frame in enumerate(frames):
        if plan.disconnect and n == DISCONNECT_AFTER and request.transport is not None:
            request.transport.close()  # mid-stream failure: no final event, no [DONE]
            return response
        if n and plan.chunk_delay_s:
            await asyncio.sleep(plan.chunk_delay_s)
        await response.write(frame)
    if trailer:
        await response.write(trailer)
    await response.write_eof()
    return response


async def _completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = json.loads(await request.read())
    except ValueError:
        return _openai_error(400, "The request body is not valid JSON.", "invalid_request_error")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return _openai_error(400, "'messages' is a required property.", "invalid_request_error")
    _record(request, body)
    plan = _choose(state, request, body)
    if plan.delay_s:
        await asyncio.sleep(plan.delay_s)
    if plan.error is not None:
        return web.json_response({"error": plan.error}, status=plan.status)
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if not body.get("stream"):
        return web.json_response(completion_body(plan, body, cid, created))
    frames = (b"data: " + _dumps(c) + b"\n\n" for c in stream_chunks(plan, body, cid, created))
    return await _stream(request, plan, frames, b"data: [DONE]\n\n")


def _dialect_handler(dialect: Dialect) -> Handler:
    """A handler answering ``dialect``'s requests with the shared decision (:func:`_choose`)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise BadRequest("The request body must be a JSON object.")
            chat = dialect.to_chat(body)
        except ValueError as e:
            param = e.param if isinstance(e, BadRequest) else None
            text = str(e) if isinstance(e, BadRequest) else "The request body is not valid JSON."
            error = {"message": text, "type": "invalid_request_error", "param": param}
            return web.json_response(dialect.error(400, error), status=400)
        _record(request, body)
        plan = _choose(state, request, chat)
        if plan.delay_s:
            await asyncio.sleep(plan.delay_s)
        if plan.error is not None:
            return web.json_response(dialect.error(plan.status, plan.error), status=plan.status)
        model = str(body.get("model") or MODEL)
        turn = Turn(body, chat, _usage(chat, plan), model, int(time.time()))
        if not body.get("stream"):
            return web.json_response(dialect.reply(plan, turn))
        frames = (
            b"event: " + event["type"].encode() + b"\ndata: " + _dumps(event) + b"\n\n"
            for event in dialect.events(plan, turn)
        )
        return await _stream(request, plan, frames)

    return handle


async def _models(request: web.Request) -> web.Response:
    model = {"id": MODEL, "object": "model", "created": 0, "owned_by": "actiongate-examples"}
    return web.json_response({"object": "list", "data": [model]})


async def _script(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        payload = await request.json()
        plans = [parse_reply(r) for r in payload["replies"]]
    except (ValueError, KeyError, TypeError) as e:
        return web.json_response({"error": f"bad script: {e}"}, status=400)
    state.queue.extend(plans)
    return web.json_response({"queued": len(state.queue)})


async def _requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].requests)


async def _reset(request: web.Request) -> web.Response:
    dropped = request.app[STATE].clear()
    return web.json_response({"ok": True, "dropped": dropped})


def create_app(
    *,
    rules: bool = False,
    api_key: str | None = None,
    fixed_tool: str | None = None,
    fixed_args: Mapping[str, Any] | None = None,
) -> web.Application:
    """Build the scripted upstream.

    Args:
        rules: answer unscripted requests with the demo rules instead of :data:`FIXED_TEXT`.
        api_key: when set, ``/v1/*`` requires ``Authorization: Bearer <api_key>``
            (``/v1/messages`` also takes ``x-api-key: <api_key>``).
        fixed_tool: call this tool on every unscripted request that does not end with a tool
            result (the ``X-Mock-Tool`` header does the same per request).
        fixed_args: arguments for ``fixed_tool``.
    """
    app = web.Application(middlewares=[_require_key])
    app[STATE] = ScriptState(rules, api_key, fixed_tool, dict(fixed_args or {}))
    app.router.add_post("/v1/chat/completions", _completions)
    app.router.add_post("/v1/responses", _dialect_handler(RESPONSES))
    app.router.add_post("/v1/messages", _dialect_handler(ANTHROPIC))
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/_script", _script)
    app.router.add_get("/_requests", _requests)
    app.router.add_post("/_reset", _reset)
    return app


@dataclass
class ScriptedUpstream:
    """A running scripted upstream, as yielded by :func:`running_upstream`."""

    base_url: str
    """The OpenAI base URL, ending in ``/v1`` (Anthropic's SDK wants it without ``/v1``)."""
    state: ScriptState

    def script(self, replies: Iterable[Mapping[str, Any]]) -> None:
        """Queue replies (see the module docstring for their shape)."""
        self.state.queue.extend(parse_reply(r) for r in replies)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every model request body received, as sent (in its dialect), oldest first."""
        return self.state.requests

    @property
    def paths(self) -> list[str]:
        """The path each of :attr:`requests` came to, in the same order."""
        return self.state.paths

    @property
    def headers(self) -> list[dict[str, str]]:
        """The headers of those requests, in the same order."""
        return self.state.headers

    def reset(self) -> int:
        """Forget queued replies and received requests; how many queued replies were unused."""
        return self.state.clear()

    @contextmanager
    def isolated(self) -> Iterator[ScriptedUpstream]:
        """One test's use of a shared upstream: it starts empty and must use what it queues.

        Whatever an earlier test left is dropped on entry, and the block's own unused replies
        on exit, so none can answer a later test. A block that ends normally with replies
        unused fails (AssertionError naming them), so the test that scripted too much is the
        one that fails, not the next one.
        """
        self.state.clear()
        try:
            yield self
        except BaseException:
            self.state.clear()
            raise
        left = [_describe(plan) for plan in self.state.queue]
        self.state.clear()
        if left:
            raise AssertionError(f"{len(left)} scripted replies were never used: {left}")


@asynccontextmanager
async def running_upstream(
    host: str = "127.0.0.1", port: int = 0, **kw: Any
) -> AsyncIterator[ScriptedUpstream]:
    """Serve :func:`create_app` (``kw`` are its options) on ``host:port`` (0: a free port)."""
    app = create_app(**kw)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield ScriptedUpstream(f"http://{bound_host}:{bound_port}/v1", app[STATE])
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """``python -m examples.scripted_upstream --port 8091 [--rules] [--api-key KEY]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--rules", action="store_true", help="answer like a support model")
    mode.add_argument("--fixed", action="store_true", help="fixed replies (the default)")
    parser.add_argument("--api-key", help="require this bearer key on /v1")
    parser.add_argument("--tool", help="call this tool on every turn (benchmarks)")
    parser.add_argument("--tool-args", default="{}", help="JSON arguments for --tool")
    args = parser.parse_args(argv)
    app = create_app(
        rules=args.rules,
        api_key=args.api_key,
        fixed_tool=args.tool,
        fixed_args=json.loads(args.tool_args),
    )
    print(f"scripted upstream on http://{args.host}:{args.port}/v1", flush=True)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
