"""The scripted upstream also speaks the OpenAI Responses API and the Anthropic Messages API,
checked with the official SDKs as clients over HTTP and against their types, with the same
decision (queue, X-Mock-Tool, rules, fixed text) as its Chat Completions path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from examples.scripted_dialects import messages_to_chat, responses_to_chat
from examples.scripted_upstream import (
    ARGUMENT_FRAGMENT,
    DISCONNECT_AFTER,
    FIXED_TEXT,
    ScriptedUpstream,
    running_upstream,
)

KEY = "test-upstream-key"
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"order_number": {"type": "string"}},
    "required": ["order_number"],
}
RESPONSES_TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "look_up_order",
        "description": "Look up one order.",
        "parameters": ORDER_SCHEMA,
        "strict": False,
    },
    {"type": "function", "name": "get_customer_account", "parameters": {}, "strict": False},
]
ANTHROPIC_TOOLS: list[Any] = [
    {"name": "look_up_order", "description": "Look up one order.", "input_schema": ORDER_SCHEMA},
    {"name": "get_customer_account", "input_schema": {"type": "object", "properties": {}}},
]
HI: list[Any] = [{"role": "user", "content": "Hi"}]
RESPONSE_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ANTHROPIC_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with running_upstream(api_key=KEY) as up:
        yield up


@pytest.fixture
async def oai(upstream: ScriptedUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    # No SDK retries: a retried request would consume the next scripted reply.
    async with openai.AsyncOpenAI(base_url=upstream.base_url, api_key=KEY, max_retries=0) as c:
        yield c


def _anthropic(up: ScriptedUpstream, **kw: Any) -> anthropic.AsyncAnthropic:
    kw.setdefault("api_key", KEY)
    return anthropic.AsyncAnthropic(base_url=up.base_url.removesuffix("/v1"), max_retries=0, **kw)


@pytest.fixture
async def ant(upstream: ScriptedUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with _anthropic(upstream) as c:
        yield c


async def _sse(up: ScriptedUpstream, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """POST ``body`` with ``stream: true`` over plain HTTP: each event's name and data."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=up.base_url) as http:
        reply = await http.post(path, json={**body, "stream": True}, headers=headers)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = []
    for frame in reply.text.split("\n\n"):
        if not frame:
            continue
        lines = frame.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: ")
        events.append(
            (lines[0].removeprefix("event: "), json.loads(lines[1].removeprefix("data: ")))
        )
    assert reply.text.endswith("\n\n") and "[DONE]" not in reply.text
    return events


# OpenAI Responses ------------------------------------------------------------------------------


async def test_responses_text_validates_strictly(
    upstream: ScriptedUpstream, oai: openai.AsyncOpenAI
) -> None:
    upstream.script([{"content": "Your order has shipped."}])
    response = await oai.responses.create(
        model="scripted", input="Where is my order?", instructions="Be brief.", store=False
    )
    assert response.output_text == "Your order has shipped."
    assert response.status == "completed" and response.id.startswith("resp_")
    message = response.output[0]
    assert message.type == "message" and message.id.startswith("msg_")
    assert message.status == "completed" and message.role == "assistant"
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.instructions == "Be brief." and response.error is None
    # The body as received is recorded, in its own dialect, with the path it came to.
    assert upstream.requests == [
        {
            "model": "scripted",
            "input": "Where is my order?",
            "instructions": "Be brief.",
            "store": False,
        }
    ]
    assert upstream.paths == ["/v1/responses"]
    # The raw JSON passes the SDK's type in strict mode and has the fields the API always sends.
    async with httpx.AsyncClient(base_url=upstream.base_url) as http:
        raw = await http.post(
            "/responses",
            json={"model": "m", "input": HI, "tools": RESPONSES_TOOLS},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    body = raw.json()
    Response.model_validate(body, strict=True)
    assert body["object"] == "response" and body["output"][0]["content"] == [
        {"type": "output_text", "text": FIXED_TEXT, "annotations": [], "logprobs": []}
    ]
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 0
    assert body["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}
    assert body["incomplete_details"] is None and body["metadata"] == {}
    assert [t["name"] for t in body["tools"]] == ["look_up_order", "get_customer_account"]
    assert body["parallel_tool_calls"] is True and body["tool_choice"] == "auto"


async def test_responses_tool_call_and_round_trip(
    upstream: ScriptedUpstream, oai: openai.AsyncOpenAI
) -> None:
    upstream.script(
        [
            {
                "tool_calls": [
                    {"name": "look_up_order", "arguments": {"order_number": "A-10023"}},
                    {"name": "get_customer_account", "arguments": "{}", "id": "call_fixed"},
                ]
            },
            {"content": "It has shipped."},
        ]
    )
    first = await oai.responses.create(model="m", input=HI, tools=RESPONSES_TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(first.output) == 2 and len(calls) == 2
    assert [c.name for c in calls] == ["look_up_order", "get_customer_account"]
    assert json.loads(calls[0].arguments) == {"order_number": "A-10023"}
    assert calls[1].call_id == "call_fixed" and calls[0].call_id.startswith("call_")
    assert all(c.id and c.id.startswith("fc_") and c.status == "completed" for c in calls)
    # The next turn sends the calls and their outputs back; no previous_response_id needed.
    outputs = [
        {"type": "function_call_output", "call_id": c.call_id, "output": '{"status": "shipped"}'}
        for c in calls
    ]
    items: list[Any] = [*HI, *(c.model_dump(exclude_none=True) for c in calls), *outputs]
    second = await oai.responses.create(model="m", input=items, tools=RESPONSES_TOOLS)
    assert second.output_text == "It has shipped."
    assert upstream.requests[1]["input"] == json.loads(json.dumps(items))


async def test_responses_stream_events_validate_and_accumulate(
    upstream: ScriptedUpstream, oai: openai.AsyncOpenAI
) -> None:
    args = {"order_number": "A-10023", "note": "a long enough value to split into fragments"}
    text = "Let me look that up for you."
    reply = {"content": text, "tool_calls": [{"name": "look_up_order", "arguments": args}]}
    upstream.script([reply])
    async with oai.responses.stream(model="m", input=HI, tools=RESPONSES_TOOLS) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert final.output_text == text and final.status == "completed"
    call = final.output[1]
    assert call.type == "function_call" and json.loads(call.arguments) == args
    assert final.usage is not None and final.usage.output_tokens > 0
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == len(text.split()) and "".join(deltas) == text
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(pieces) > 3 and all(len(p) <= ARGUMENT_FRAGMENT for p in pieces)
    # On the wire: `event:` names the type, each event passes the SDK's union strictly, in order.
    upstream.script([reply])
    raw = await _sse(upstream, "/responses", {"model": "m", "input": HI, "tools": RESPONSES_TOOLS})
    for name, data in raw:
        assert name == data["type"]
        RESPONSE_EVENT.validate_python(data, strict=True)
    kinds = [name for name, _ in raw if not name.endswith(".delta")]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert (
        raw[0][1]["response"]["status"] == "in_progress" and raw[0][1]["response"]["output"] == []
    )
    completed = raw[-1][1]["response"]
    Response.model_validate(completed, strict=True)
    assert completed["usage"]["total_tokens"] > 0
    assert {completed["id"]} == {raw[0][1]["response"]["id"], raw[1][1]["response"]["id"]}


async def test_responses_stream_of_plain_text_via_create(
    upstream: ScriptedUpstream, oai: openai.AsyncOpenAI
) -> None:
    stream = await oai.responses.create(model="m", input="Hi", stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == FIXED_TEXT
    assert all(e.type != "response.function_call_arguments.delta" for e in events)


async def test_responses_tool_choice_none_and_the_mock_tool_header(
    upstream: ScriptedUpstream,
) -> None:
    headers = {"X-Mock-Tool": "look_up_order", "X-Mock-Args": '{"order_number": "A-1"}'}
    async with openai.AsyncOpenAI(
        base_url=upstream.base_url, api_key=KEY, max_retries=0, default_headers=headers
    ) as c:
        first = await c.responses.create(model="m", input=HI, tools=RESPONSES_TOOLS)
        call = first.output[0]
        assert call.type == "function_call" and call.name == "look_up_order"
        assert call.arguments == '{"order_number": "A-1"}'
        result = {"type": "function_call_output", "call_id": call.call_id, "output": "shipped"}
        items: list[Any] = [*HI, call.model_dump(exclude_none=True), result]
        second = await c.responses.create(model="m", input=items, tools=RESPONSES_TOOLS)
        assert second.output_text == FIXED_TEXT  # a tool result is answered, not called again
        told_not_to = await c.responses.create(
            model="m", input=HI, tools=RESPONSES_TOOLS, tool_choice="none"
        )
        assert told_not_to.output_text == FIXED_TEXT


async def test_responses_rules_pick_the_order_tool_and_summarise() -> None:
    async with (
        running_upstream(rules=True) as up,
        openai.AsyncOpenAI(base_url=up.base_url, api_key="any", max_retries=0) as c,
    ):
        question = {
            "role": "user",
            "content": [{"type": "input_text", "text": "Where is A-10023?"}],
        }
        first = await c.responses.create(model="m", input=[question], tools=RESPONSES_TOOLS)
        call = first.output[0]
        assert call.type == "function_call" and call.name == "look_up_order"
        assert json.loads(call.arguments) == {"order_number": "A-10023"}
        output = '<data>\n{"status":"shipped","delivery_date":"2024-06-14"}\n</data>'
        result = {"type": "function_call_output", "call_id": call.call_id, "output": output}
        items: list[Any] = [question, call.model_dump(exclude_none=True), result]
        second = await c.responses.create(model="m", input=items, tools=RESPONSES_TOOLS)
        assert "shipped" in second.output_text and "2024-06-14" in second.output_text


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (500, openai.InternalServerError),
        (429, openai.RateLimitError),
        (400, openai.BadRequestError),
    ],
)
async def test_responses_scripted_error_raises_the_matching_sdk_error(
    upstream: ScriptedUpstream,
    oai: openai.AsyncOpenAI,
    status: int,
    error_class: type[openai.APIStatusError],
) -> None:
    upstream.script([{"error": {"status": status, "message": "the model is overloaded"}}])
    with pytest.raises(error_class, match="the model is overloaded") as caught:
        await oai.responses.create(model="m", input="Hi")
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and caught.value.body["type"]


async def test_responses_refusals_in_openai_shape(upstream: ScriptedUpstream) -> None:
    async with openai.AsyncOpenAI(base_url=upstream.base_url, api_key="no", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as refused:
            await c.responses.create(model="m", input="Hi")
    assert isinstance(refused.value.body, dict) and refused.value.body["code"] == "invalid_api_key"
    async with openai.AsyncOpenAI(base_url=upstream.base_url, api_key=KEY, max_retries=0) as c:
        with pytest.raises(openai.BadRequestError, match="input") as bad:
            await c.post("/responses", cast_to=Response, body={"model": "m"})
    assert isinstance(bad.value.body, dict) and bad.value.body["param"] == "input"
    assert upstream.requests == []


async def test_responses_disconnect_breaks_the_stream(
    upstream: ScriptedUpstream, oai: openai.AsyncOpenAI
) -> None:
    upstream.script([{"content": "one two three four five six", "disconnect": True}])
    seen = []
    stream = await oai.responses.create(model="m", input="Hi", stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for event in stream:
            seen.append(event.type)
    assert len(seen) == DISCONNECT_AFTER and "response.completed" not in seen


# Anthropic Messages ----------------------------------------------------------------------------


async def test_messages_text(upstream: ScriptedUpstream, ant: anthropic.AsyncAnthropic) -> None:
    upstream.script([{"content": "Your order has shipped."}])
    system: list[Any] = [{"type": "text", "text": "Be brief."}]
    message = await ant.messages.create(model="claude", max_tokens=64, system=system, messages=HI)
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert (
        message.content[0].type == "text" and message.content[0].text == "Your order has shipped."
    )
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert upstream.requests == [
        {"model": "claude", "max_tokens": 64, "system": system, "messages": HI}
    ]
    assert upstream.paths == ["/v1/messages"]


async def test_messages_tool_use_and_round_trip(
    upstream: ScriptedUpstream, ant: anthropic.AsyncAnthropic
) -> None:
    upstream.script(
        [
            {
                "content": "Let me check.",
                "tool_calls": [
                    {"name": "look_up_order", "arguments": {"order_number": "A-10023"}},
                    {"name": "get_customer_account", "arguments": {}, "id": "toolu_fixed"},
                ],
            },
            {"content": "It has shipped."},
        ]
    )
    first = await ant.messages.create(model="c", max_tokens=64, messages=HI, tools=ANTHROPIC_TOOLS)
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use", "tool_use"]
    uses = [b for b in first.content if b.type == "tool_use"]
    assert uses[0].name == "look_up_order" and uses[0].input == {"order_number": "A-10023"}
    assert uses[0].id.startswith("toolu_") and uses[1].id == "toolu_fixed"
    results = [
        {"type": "tool_result", "tool_use_id": u.id, "content": [{"type": "text", "text": "ok"}]}
        for u in uses
    ]
    messages: list[Any] = [
        *HI,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": results},
    ]
    second = await ant.messages.create(
        model="c", max_tokens=64, messages=messages, tools=ANTHROPIC_TOOLS
    )
    assert second.content[0].type == "text" and second.content[0].text == "It has shipped."
    assert upstream.requests[1]["messages"][2]["content"] == results


async def test_messages_stream_events_validate_and_accumulate(
    upstream: ScriptedUpstream, ant: anthropic.AsyncAnthropic
) -> None:
    args = {"order_number": "A-10023", "note": "a long enough value to split into fragments"}
    text = "Let me look that up for you."
    reply = {"content": text, "tool_calls": [{"name": "look_up_order", "arguments": args}]}
    upstream.script([reply])
    async with ant.messages.stream(
        model="c", max_tokens=64, messages=HI, tools=ANTHROPIC_TOOLS
    ) as stream:
        streamed = [event async for event in stream]
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.usage.output_tokens > 1
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.content[1].type == "tool_use" and final.content[1].input == args
    assert any(e.type == "text" for e in streamed)  # the helper's own text events
    # On the wire: `event:` names the type, each event passes the SDK's union strictly, in order.
    upstream.script([reply])
    body = {"model": "c", "max_tokens": 64, "messages": HI, "tools": ANTHROPIC_TOOLS}
    raw = await _sse(upstream, "/messages", body)
    for name, data in raw:
        assert name == data["type"]
        ANTHROPIC_EVENT.validate_python(data, strict=True)
    deltas = [d["delta"] for _, d in raw if d["type"] == "content_block_delta"]
    words = [d["text"] for d in deltas if d["type"] == "text_delta"]
    partial = [d["partial_json"] for d in deltas if d["type"] == "input_json_delta"]
    assert "".join(words) == text and len(words) == len(text.split())
    assert json.loads("".join(partial)) == args and len(partial) > 3
    kinds = [name for name, _ in raw if name != "content_block_delta"]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = raw[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    Message.model_validate(start, strict=True)
    assert raw[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


async def test_messages_arguments_that_are_not_a_json_object(
    upstream: ScriptedUpstream, ant: anthropic.AsyncAnthropic
) -> None:
    broken = '{"order_number": "A-1"'  # a model's malformed arguments
    upstream.script([{"tool_calls": [{"name": "look_up_order", "arguments": broken}]}])
    message = await ant.messages.create(model="c", max_tokens=9, messages=HI, tools=ANTHROPIC_TOOLS)
    assert message.content[0].type == "tool_use" and message.content[0].input == {}
    upstream.script([{"tool_calls": [{"name": "look_up_order", "arguments": broken}]}])
    raw = await _sse(upstream, "/messages", {"model": "c", "max_tokens": 9, "messages": HI})
    partial = [d["delta"]["partial_json"] for _, d in raw if d["type"] == "content_block_delta"]
    assert "".join(partial) == broken  # streamed as-is


async def test_messages_auth_takes_x_api_key_or_bearer(
    upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    # Anthropic's own header (this SDK version sends api_key as a bearer token instead).
    async with _anthropic(upstream, api_key=None, default_headers={"x-api-key": KEY}) as c:
        message = await c.messages.create(model="c", max_tokens=9, messages=HI)
    assert message.content[0].type == "text" and message.content[0].text == FIXED_TEXT
    sent = {name.lower(): value for name, value in upstream.headers[-1].items()}
    assert sent["x-api-key"] == KEY and "authorization" not in sent
    async with _anthropic(upstream, api_key=None, auth_token=KEY) as bearer:
        message = await bearer.messages.create(model="c", max_tokens=9, messages=HI)
    sent = {name.lower(): value for name, value in upstream.headers[-1].items()}
    assert sent["authorization"] == f"Bearer {KEY}" and "x-api-key" not in sent
    refusal = {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    for wrong in ({"api_key": "wrong"}, {"api_key": None, "default_headers": {"x-api-key": "no"}}):
        async with _anthropic(upstream, **wrong) as c:
            with pytest.raises(anthropic.AuthenticationError) as refused:
                await c.messages.create(model="c", max_tokens=9, messages=HI)
        assert refused.value.status_code == 401 and refused.value.body == refusal
    assert upstream.paths == ["/v1/messages"] * 2
    # x-api-key is Anthropic's: the OpenAI paths still want the bearer key.
    async with httpx.AsyncClient(base_url=upstream.base_url) as http:
        chat = {"model": "m", "messages": HI}
        other = await http.post("/chat/completions", json=chat, headers={"x-api-key": KEY})
    assert other.status_code == 401 and other.json()["error"]["code"] == "invalid_api_key"


async def test_messages_without_max_tokens_is_refused(
    upstream: ScriptedUpstream, ant: anthropic.AsyncAnthropic
) -> None:
    body = {"model": "c", "messages": HI}
    with pytest.raises(anthropic.BadRequestError, match="max_tokens") as refused:
        await ant.post("/v1/messages", cast_to=Message, body=body)
    assert refused.value.status_code == 400
    assert refused.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("status", "kind", "error_class"),
    [
        (500, "api_error", anthropic.InternalServerError),
        (529, "overloaded_error", anthropic.OverloadedError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (400, "invalid_request_error", anthropic.BadRequestError),
    ],
)
async def test_messages_scripted_error_raises_the_matching_sdk_error(
    upstream: ScriptedUpstream,
    ant: anthropic.AsyncAnthropic,
    status: int,
    kind: str,
    error_class: type[anthropic.APIStatusError],
) -> None:
    upstream.script([{"error": {"status": status, "message": "the model is overloaded"}}])
    with pytest.raises(error_class, match="the model is overloaded") as caught:
        await ant.messages.create(model="c", max_tokens=9, messages=HI)
    assert caught.value.status_code == status
    assert caught.value.body == {
        "type": "error",
        "error": {"type": kind, "message": "the model is overloaded"},
    }


async def test_messages_mock_tool_header_and_tool_choice_none(upstream: ScriptedUpstream) -> None:
    headers = {"X-Mock-Tool": "look_up_order", "X-Mock-Args": '{"order_number": "A-1"}'}
    async with _anthropic(upstream, default_headers=headers) as c:
        first = await c.messages.create(model="c", max_tokens=9, messages=HI, tools=ANTHROPIC_TOOLS)
        use = first.content[0]
        assert use.type == "tool_use" and use.name == "look_up_order"
        assert use.input == {"order_number": "A-1"}
        messages: list[Any] = [
            *HI,
            {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id}]},
        ]
        second = await c.messages.create(
            model="c", max_tokens=9, messages=messages, tools=ANTHROPIC_TOOLS
        )
        assert second.stop_reason == "end_turn"
        told_not_to = await c.messages.create(
            model="c",
            max_tokens=9,
            messages=HI,
            tools=ANTHROPIC_TOOLS,
            tool_choice={"type": "none"},
        )
        assert told_not_to.stop_reason == "end_turn"


async def test_messages_rules_pick_the_order_tool_and_relay_a_failure() -> None:
    async with running_upstream(rules=True) as up, _anthropic(up, api_key="any") as c:
        question = {"role": "user", "content": "Where is my order A-10023?"}
        first = await c.messages.create(
            model="c", max_tokens=9, messages=[question], tools=ANTHROPIC_TOOLS
        )
        use = first.content[0]
        assert use.type == "tool_use" and use.name == "look_up_order"
        assert use.input == {"order_number": "A-10023"}
        result = {"type": "tool_result", "tool_use_id": use.id, "is_error": True}
        result["content"] = "Action look_up_order was not run: lead.email is missing."
        messages: list[Any] = [
            question,
            {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
            {"role": "user", "content": [result]},
        ]
        second = await c.messages.create(
            model="c", max_tokens=9, messages=messages, tools=ANTHROPIC_TOOLS
        )
    assert second.content[0].type == "text"
    assert "lead.email is missing" in second.content[0].text


async def test_messages_disconnect_breaks_the_stream(
    upstream: ScriptedUpstream, ant: anthropic.AsyncAnthropic
) -> None:
    upstream.script([{"content": "one two three four five six", "disconnect": True}])
    seen = []
    with pytest.raises(anthropic.APIConnectionError):
        async with ant.messages.stream(model="c", max_tokens=9, messages=HI) as stream:
            async for event in stream:
                seen.append(event.type)
    assert "message_stop" not in seen


# Shared ----------------------------------------------------------------------------------------


async def test_paths_follow_the_requests_and_reset_clears_them(
    upstream: ScriptedUpstream, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    upstream.script([{"content": "one"}, {"content": "two"}, {"content": "three"}])
    chat = await oai.chat.completions.create(model="m", messages=HI)
    response = await oai.responses.create(model="m", input=HI)
    message = await ant.messages.create(model="c", max_tokens=9, messages=HI)
    assert chat.choices[0].message.content == "one" and response.output_text == "two"
    assert message.content[0].type == "text" and message.content[0].text == "three"
    assert upstream.paths == ["/v1/chat/completions", "/v1/responses", "/v1/messages"]
    assert [sorted(r)[0] for r in upstream.requests] == ["messages", "input", "max_tokens"]
    async with httpx.AsyncClient(base_url=upstream.base_url.removesuffix("/v1")) as http:
        assert (await http.get("/_requests")).json() == upstream.requests
        await http.post("/_reset")
    assert upstream.paths == [] and upstream.requests == []


def test_responses_translation_to_the_chat_view() -> None:
    body = {
        "instructions": "Be kind.",
        "input": [
            {"role": "developer", "content": "Stay on topic."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "b", "arguments": '{"x":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
        "tools": [*RESPONSES_TOOLS, {"type": "web_search"}],
        "tool_choice": {"type": "function", "name": "a"},
    }
    chat = responses_to_chat(body)
    assert chat["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "system", "content": "Stay on topic."},
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    assert chat["tools"][0] == {
        "type": "function",
        "function": {
            "name": "look_up_order",
            "parameters": ORDER_SCHEMA,
            "description": "Look up one order.",
        },
    }
    assert len(chat["tools"]) == 2
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "a"}}


def test_messages_translation_to_the_chat_view() -> None:
    body = {
        "max_tokens": 9,
        "system": [{"type": "text", "text": "Be kind."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "a", "input": {"x": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "nope",
                        "is_error": True,
                    },
                    {"type": "text", "text": "Try again?"},
                ],
            },
        ],
        "tools": [*ANTHROPIC_TOOLS, {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "any"},
    }
    chat = messages_to_chat(body)
    call = {"id": "t1", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}}
    assert chat["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "t1", "content": "Error: nope"},
        {"role": "user", "content": "Try again?"},
    ]
    assert [t["function"]["name"] for t in chat["tools"]] == [
        "look_up_order",
        "get_customer_account",
    ]
    assert chat["tool_choice"] == "required"
    assert messages_to_chat({**body, "tool_choice": {"type": "none"}})["tool_choice"] == "none"
