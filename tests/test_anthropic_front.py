"""``POST /v1/messages`` with the official anthropic SDK, in process over the ASGI app.

The upstream is the scripted Chat Completions server: the front translates both ways, and the
gateway-side action really runs against the local action API and is logged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.support.gateway import Gateway, running_gateway, sdk_http_client

USER = [{"role": "user", "content": "Where is order A-12345?"}]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(
        tmp_path, more_agents=[{"id": "locked", "api_keys": ["sk-ant-locked-1"]}]
    ) as gateway:
        yield gateway


def client(gw: Gateway, key: str = "unused") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url="http://gw", api_key=key, max_retries=0, http_client=sdk_http_client(gw)
    )


def call(name: str, arguments: dict[str, Any], id: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments, "id": id}]}


async def test_messages_create_runs_a_gateway_action(gw: Gateway) -> None:
    gw.upstream.script(
        [call("look_up_order", {"order_number": "A-12345"}, "c1"), {"content": "It shipped."}]
    )
    raw = await client(gw).messages.with_raw_response.create(
        model="support", max_tokens=256, system="Answer briefly.", messages=USER
    )
    message = await raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "It shipped."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.model == "support"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert gw.api.last().path.endswith("/orders/A-12345")
    first = gw.upstream.requests[0]
    assert [m["role"] for m in first["messages"]] == ["system", "system", "user"]
    assert first["messages"][1]["content"] == "Answer briefly."
    assert first["max_tokens"] == 256
    conversation = raw.headers["x-actiongate-conversation-id"]
    [record] = await gw.records(conversation_id=conversation)
    assert record.action == "look_up_order" and record.outcome == "success" and record.injected


async def test_messages_stream_gives_anthropic_events(gw: Gateway) -> None:
    gw.upstream.script([{"content": "Hello there, how can I help?"}])
    async with client(gw).messages.stream(model="support", max_tokens=100, messages=USER) as s:
        kinds = [event.type async for event in s]
        final = await s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    assert final.content[0].text == "Hello there, how can I help?"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


async def test_a_client_tool_use_and_tool_result_round_trip(gw: Gateway) -> None:
    weather = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    gw.upstream.script([call("get_weather", {"city": "Oslo"}, "toolu_1")])
    ant = client(gw)
    first = await ant.messages.create(
        model="support",
        max_tokens=100,
        messages=USER,
        tools=[weather],  # type: ignore[list-item]
    )
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Oslo"} and use.id == "toolu_1"
    sent_tool = gw.upstream.requests[0]["tools"][0]
    assert sent_tool["function"]["name"] == "get_weather"
    assert sent_tool["function"]["parameters"] == weather["input_schema"]

    gw.upstream.script([{"content": "It is sunny in Oslo."}])
    history: list[Any] = [
        *USER,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
        },
    ]
    async with ant.messages.stream(
        model="support",
        max_tokens=100,
        messages=history,
        tools=[weather],  # type: ignore[list-item,arg-type]
    ) as s:
        final = await s.get_final_message()
    assert final.content[0].text == "It is sunny in Oslo."  # type: ignore[union-attr]
    sent = gw.upstream.requests[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
    }
    assert sent[-1] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}


async def test_a_streamed_tool_use_carries_its_input(gw: Gateway) -> None:
    gw.upstream.script([call("return_request", {"order_number": "A-12345"}, "toolu_f")])
    async with client(gw).messages.stream(model="support", max_tokens=100, messages=USER) as s:
        final = await s.get_final_message()
    [use] = [b for b in final.content if b.type == "tool_use"]
    assert use.name == "return_request" and use.input == {"order_number": "A-12345"}
    assert final.stop_reason == "tool_use"


async def test_errors_come_in_anthropics_shape_and_classes(gw: Gateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as unknown:
        await client(gw).messages.create(model="nope", max_tokens=10, messages=USER)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        await client(gw, "wrong").messages.create(model="locked", max_tokens=10, messages=USER)
    ok = await client(gw, "sk-ant-locked-1").messages.with_raw_response.create(
        model="locked", max_tokens=10, messages=USER
    )
    assert ok.status_code == 200  # x-api-key is the client key
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client(gw).messages.create(
            model="support",
            max_tokens=10,
            messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}],  # type: ignore[list-item]
        )
    assert "image" in bad.value.message
    gw.upstream.script([{"error": {"status": 500, "message": "boom"}}])
    with pytest.raises(anthropic.APIStatusError) as failed:
        await client(gw).messages.create(model="support", max_tokens=10, messages=USER)
    assert failed.value.status_code >= 500
    assert failed.value.body["type"] == "error"  # type: ignore[index]
    raw = await gw.client.post("/v1/messages", json={"model": "support", "messages": USER})
    assert (
        raw.status_code == 400 and json.loads(raw.text)["error"]["type"] == "invalid_request_error"
    )
