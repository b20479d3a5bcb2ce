"""``POST /v1/responses`` with the official openai SDK, in process over the ASGI app.

The upstream is the scripted Chat Completions server: the front translates both ways, and the
gateway-side action really runs against the local action API and is logged. Raw bodies and
events are also validated against the SDK's own types.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.support.gateway import Gateway, running_gateway, sdk_http_client

ASK = "Where is order A-12345?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(
        tmp_path, more_agents=[{"id": "other", "system_prompt": "Other."}]
    ) as gateway:
        yield gateway


def client(gw: Gateway, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://gw/v1", api_key=key, max_retries=0, http_client=sdk_http_client(gw)
    )


def call(name: str, arguments: dict[str, Any], id: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments, "id": id}]}


def events_of(text: str) -> list[dict[str, Any]]:
    """The ``data:`` objects of an SSE body, checking each ``event:`` names its type."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        out.append(data)
    return out


async def test_create_runs_a_gateway_action_and_hides_its_call(gw: Gateway) -> None:
    gw.upstream.script(
        [call("look_up_order", {"order_number": "A-12345"}, "c1"), {"content": "It shipped."}]
    )
    raw = await client(gw).responses.with_raw_response.create(
        model="support", input=ASK, instructions="Answer briefly."
    )
    response = raw.parse()
    assert response.output_text == "It shipped." and response.status == "completed"
    assert [item.type for item in response.output] == ["message"]  # the gateway's call is not
    assert response.model == "support" and response.id.startswith("resp_")
    assert response.usage is not None and response.usage.input_tokens > 0
    Response.model_validate(json.loads(raw.http_response.text))
    first = gw.upstream.requests[0]
    assert [m["role"] for m in first["messages"]] == ["system", "system", "user"]
    assert first["messages"][1]["content"] == "Answer briefly."
    assert gw.api.last().path.endswith("/orders/A-12345")
    assert raw.headers["x-actiongate-executions"] == "look_up_order=success"
    conversation = raw.headers["x-actiongate-conversation-id"]
    [record] = await gw.records(conversation_id=conversation)
    assert record.action == "look_up_order" and record.outcome == "success" and record.injected
    body = json.loads(raw.http_response.text)
    assert body["actiongate"]["conversation_id"] == conversation


async def test_stream_gives_the_responses_event_stream(gw: Gateway) -> None:
    gw.upstream.script([{"content": "Hello there, how can I help?"}])
    async with client(gw).responses.stream(model="support", input=ASK) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") > 1
    assert final.output_text == "Hello there, how can I help?"
    assert final.usage is not None and final.usage.output_tokens > 0

    gw.upstream.script(
        [call("look_up_order", {"order_number": "A-12345"}, "c2"), {"content": "Ok."}]
    )
    raw = await gw.client.post(
        "/v1/responses", json={"model": "support", "input": ASK, "stream": True}
    )
    events = events_of(raw.text)
    for event in events:
        EVENTS.validate_python(event)  # every event has the SDK's shape
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    completed = events[-1]["response"]
    assert completed["actiongate"]["executions"][0]["action"] == "look_up_order"
    assert raw.headers["x-actiongate-conversation-id"] == completed["actiongate"]["conversation_id"]


async def test_a_client_function_call_round_trip_with_previous_response_id(gw: Gateway) -> None:
    gw.upstream.script([call("get_weather", {"city": "Oslo"}, "call_w1")])
    oa = client(gw)
    first = await oa.responses.create(model="support", input="Weather in Oslo?", tools=[WEATHER])  # type: ignore[list-item]
    [fc] = first.output
    assert fc.type == "function_call" and fc.name == "get_weather"
    assert json.loads(fc.arguments) == {"city": "Oslo"} and fc.call_id == "call_w1"
    sent = gw.upstream.requests[0]["tools"]
    assert {t["function"]["name"] for t in sent} >= {"get_weather", "look_up_order"}

    gw.upstream.script([{"content": "It is sunny in Oslo."}])
    async with oa.responses.stream(
        model="support",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_w1", "output": "sunny"}],
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        second = await stream.get_final_response()
    assert second.output_text == "It is sunny in Oslo."
    assert second.previous_response_id == first.id
    history = gw.upstream.requests[1]["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "tool"]
    assert history[2]["tool_calls"][0]["id"] == "call_w1" and history[3]["content"] == "sunny"


async def test_a_resent_history_works_without_a_stored_response(gw: Gateway) -> None:
    gw.upstream.script([{"content": "Sunny."}])
    items: list[Any] = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "function_call", "call_id": "c9", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c9", "output": "sunny"},
    ]
    response = await client(gw).responses.create(
        model="support",
        input=items,
        tools=[WEATHER],
        store=False,  # type: ignore[list-item]
    )
    assert response.output_text == "Sunny."
    sent = gw.upstream.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    with pytest.raises(openai.NotFoundError):  # store=False kept nothing
        await client(gw).responses.create(
            model="support", input="and now?", previous_response_id=response.id
        )


async def test_a_mixed_round_shows_the_client_only_its_call(gw: Gateway) -> None:
    both = {
        "tool_calls": [
            {"name": "look_up_order", "arguments": {"order_number": "A-12345"}, "id": "g1"},
            {"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "w1"},
        ]
    }
    gw.upstream.script([both])
    oa = client(gw)
    first = await oa.responses.create(model="support", input=ASK, tools=[WEATHER])  # type: ignore[list-item]
    assert [(i.type, getattr(i, "call_id", None)) for i in first.output] == [
        ("function_call", "w1")
    ]
    assert gw.api.last().path.endswith("/orders/A-12345")  # the gateway's half ran
    gw.upstream.script([{"content": "Done."}])
    await oa.responses.create(
        model="support",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "w1", "output": "sunny"}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    history = gw.upstream.requests[1]["messages"]
    assert [m.get("tool_call_id") for m in history if m["role"] == "tool"] == ["g1", "w1"]


async def test_previous_responses_belong_to_their_agent(gw: Gateway) -> None:
    gw.upstream.script([{"content": "Hi."}])
    first = await client(gw).responses.create(model="support", input="Hello")
    with pytest.raises(openai.NotFoundError) as other:
        await client(gw).responses.create(model="other", input="x", previous_response_id=first.id)
    assert other.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        await client(gw).responses.create(
            model="support", input="x", previous_response_id="resp_nope"
        )
    assert len(gw.upstream.requests) == 1  # nothing reached the upstream


async def test_conversation_ids_in_openais_form_and_from_the_previous_response(
    gw: Gateway,
) -> None:
    gw.upstream.script([{"content": "One."}, {"content": "Two."}])
    oa = client(gw)
    raw = await oa.responses.with_raw_response.create(
        model="support", input="Hi", conversation="conv_42"
    )
    assert raw.headers["x-actiongate-conversation-id"] == "conv_42"
    again = await oa.responses.with_raw_response.create(
        model="support", input="More", previous_response_id=raw.parse().id
    )
    assert again.headers["x-actiongate-conversation-id"] == "conv_42"
    assert [m["content"] for m in gw.upstream.requests[1]["messages"][1:]] == ["Hi", "One.", "More"]
    with pytest.raises(openai.BadRequestError) as clash:
        await oa.responses.create(
            model="support",
            input="x",
            previous_response_id=again.parse().id,
            conversation={"id": "conv_other"},
        )
    assert clash.value.param == "conversation"


async def test_text_format_and_tool_choice_are_passed_on(gw: Gateway) -> None:
    gw.upstream.script([{"content": '{"ok": true}'}])
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    await client(gw).responses.create(
        model="support",
        input="json please",
        text={"format": {"type": "json_schema", "name": "ok", "schema": schema, "strict": True}},
        tool_choice={"type": "function", "name": "look_up_order"},
        max_output_tokens=50,
        temperature=0.2,
    )
    sent = gw.upstream.requests[0]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "ok", "schema": schema, "strict": True},
    }
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "look_up_order"}}
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.2


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"input": [{"type": "input_image", "image_url": "x"}]}, "input[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content"),
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"input": 7}, "input"),
        ({"background": True}, "background"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format"),
    ],
)
async def test_bad_requests_get_openai_errors_naming_the_field(
    gw: Gateway, body: dict[str, Any], named: str
) -> None:
    raw = await gw.client.post("/v1/responses", json={"model": "support", "input": "x", **body})
    assert raw.status_code == 400, raw.text
    error = raw.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == named
    assert named.split("[")[0].split(".")[0] in error["message"]
    assert gw.upstream.requests == []  # nothing was sent


async def test_upstream_failures_reach_the_sdk_as_errors(gw: Gateway) -> None:
    gw.upstream.script([{"error": {"status": 500, "message": "boom"}}])
    with pytest.raises(openai.APIStatusError) as failed:
        await client(gw).responses.create(model="support", input=ASK)
    assert failed.value.status_code == 502
    gw.upstream.script([{"content": "one two three four five six", "disconnect": True}])
    with pytest.raises(openai.APIError):
        async with client(gw).responses.stream(model="support", input=ASK) as stream:
            async for _ in stream:
                pass
    with pytest.raises(openai.NotFoundError):
        await client(gw).responses.create(model="nope", input=ASK)
