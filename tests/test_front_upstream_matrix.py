"""Every client front by every upstream dialect: plain text, a gateway-side action, a stream, and a
client tool round trip.

Clients are the official SDKs, unchanged (openai for ``/v1/chat/completions`` and
``/v1/responses``, anthropic for ``/v1/messages``); each agent's upstream speaks one dialect of
the scripted upstream, which validates nothing for us: the test checks the path and body the
upstream received in its own dialect, what the client got, and the execution log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.support.gateway import Gateway, running_gateway, sdk_http_client

DIALECTS = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "anthropic": "/v1/messages",
}
FRONTS = ("chat", "responses", "messages")
ASK = "Where is order A-12345?"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    agents = [
        {"id": f"via-{api}", "upstream": {"api": api}, "system_prompt": "Be brief."}
        for api in DIALECTS
    ]
    async with running_gateway(tmp_path, more_agents=agents) as gateway:
        yield gateway


@dataclass
class Reply:
    text: str
    calls: list[tuple[str, str, dict[str, Any]]]  # id, name, arguments
    conversation: str
    raw: Any = None
    history: list[Any] = field(default_factory=list)


class Front:
    """One client front driven by its official SDK."""

    def __init__(self, name: str, gw: Gateway) -> None:
        self.name = name
        if name == "messages":
            self.ant = anthropic.AsyncAnthropic(
                base_url="http://gw", api_key="k", max_retries=0, http_client=sdk_http_client(gw)
            )
        else:
            self.oa = openai.AsyncOpenAI(
                base_url="http://gw/v1", api_key="k", max_retries=0, http_client=sdk_http_client(gw)
            )

    def tools(self) -> list[Any]:
        if self.name == "chat":
            function = {"name": "get_weather", "description": "Weather.", "parameters": CITY}
            return [{"type": "function", "function": function}]
        if self.name == "responses":
            return [{"type": "function", "name": "get_weather", "parameters": CITY}]
        return [{"name": "get_weather", "description": "Weather.", "input_schema": CITY}]

    async def ask(self, agent: str, stream: bool, tools: bool = False) -> Reply:
        extra = {"tools": self.tools()} if tools else {}
        if self.name == "chat":
            return await self._chat(agent, [{"role": "user", "content": ASK}], stream, extra)
        if self.name == "responses":
            return await self._responses(agent, {"input": ASK}, stream, extra)
        return await self._messages(agent, [{"role": "user", "content": ASK}], stream, extra)

    async def answer(self, agent: str, first: Reply, result: str) -> Reply:
        """Send the client tool's result back (not streamed) and get the next reply."""
        call_id = first.calls[0][0]
        if self.name == "chat":
            tool = {"role": "tool", "tool_call_id": call_id, "content": result}
            return await self._chat(agent, [*first.history, tool], False, {"tools": self.tools()})
        if self.name == "responses":
            output = {"type": "function_call_output", "call_id": call_id, "output": result}
            body = {"input": [output], "previous_response_id": first.raw.id}
            return await self._responses(agent, body, False, {"tools": self.tools()})
        block = {"type": "tool_result", "tool_use_id": call_id, "content": result}
        messages = [*first.history, {"role": "user", "content": [block]}]
        return await self._messages(agent, messages, False, {"tools": self.tools()})

    async def _chat(
        self, agent: str, messages: list[Any], stream: bool, extra: dict[str, Any]
    ) -> Reply:
        if stream:
            text, calls = "", {}
            async with await self.oa.chat.completions.create(
                model=agent, messages=messages, stream=True, **extra
            ) as chunks:
                async for chunk in chunks:
                    if chunk.choices and chunk.choices[0].delta.content:
                        text += chunk.choices[0].delta.content
                    last = chunk
                    for c in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                        calls[c.index] = c
            conversation = (last.model_extra or {})["actiongate"]["conversation_id"]
            found = [
                (c.id, c.function.name, json.loads(c.function.arguments)) for c in calls.values()
            ]  # type: ignore[union-attr, arg-type]
            return Reply(text, found, conversation)
        raw = await self.oa.chat.completions.with_raw_response.create(
            model=agent, messages=messages, **extra
        )
        message = raw.parse().choices[0].message
        found = [
            (c.id, c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
            for c in message.tool_calls or []
        ]
        history = [*messages, message.model_dump(exclude_none=True)]
        conversation = raw.headers["x-actiongate-conversation-id"]
        return Reply(message.content or "", found, conversation, raw.parse(), history)

    async def _responses(
        self, agent: str, body: dict[str, Any], stream: bool, extra: dict[str, Any]
    ) -> Reply:
        if stream:
            async with self.oa.responses.stream(model=agent, **body, **extra) as events:
                response = await events.get_final_response()
            conversation = (response.model_extra or {})["actiongate"]["conversation_id"]
        else:
            raw = await self.oa.responses.with_raw_response.create(model=agent, **body, **extra)
            response, conversation = raw.parse(), raw.headers["x-actiongate-conversation-id"]
        found = [
            (item.call_id, item.name, json.loads(item.arguments))
            for item in response.output
            if item.type == "function_call"
        ]
        return Reply(response.output_text, found, conversation, response)

    async def _messages(
        self, agent: str, messages: list[Any], stream: bool, extra: dict[str, Any]
    ) -> Reply:
        if stream:
            async with self.ant.messages.stream(
                model=agent, max_tokens=200, messages=messages, **extra
            ) as events:
                message = await events.get_final_message()
            conversation = events.response.headers["x-actiongate-conversation-id"]
        else:
            raw = await self.ant.messages.with_raw_response.create(
                model=agent, max_tokens=200, messages=messages, **extra
            )
            message, conversation = await raw.parse(), raw.headers["x-actiongate-conversation-id"]
        text = "".join(b.text for b in message.content if b.type == "text")
        found = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
        assistant = {"role": "assistant", "content": [b.model_dump() for b in message.content]}
        history = [*messages, assistant]
        return Reply(text, found, conversation, message, history)  # type: ignore[arg-type]


def _call(name: str, arguments: dict[str, Any], id: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments, "id": id}]}


def _upstream_saw(gw: Gateway, api: str, count: int) -> None:
    assert gw.upstream.state.paths == [DIALECTS[api]] * count


def _tool_result_in(body: dict[str, Any], api: str) -> str:
    """The last tool result an upstream request carries, read in its own dialect."""
    if api == "chat":
        return str([m for m in body["messages"] if m["role"] == "tool"][-1]["content"])
    if api == "responses":
        return str(
            [i for i in body["input"] if i.get("type") == "function_call_output"][-1]["output"]
        )
    blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
    return str([b for b in blocks if b.get("type") == "tool_result"][-1]["content"])


@pytest.mark.parametrize("api", list(DIALECTS))
@pytest.mark.parametrize("front", FRONTS)
async def test_plain(gw: Gateway, front: str, api: str) -> None:
    gw.upstream.script([{"content": "Hello from the model."}])
    reply = await Front(front, gw).ask(f"via-{api}", stream=False)
    assert reply.text == "Hello from the model." and reply.calls == []
    _upstream_saw(gw, api, 1)
    sent = gw.upstream.requests[0]
    assert "Be brief." in json.dumps(sent)  # the agent's prompt, in the dialect's place
    assert ASK in json.dumps(sent)


@pytest.mark.parametrize("api", list(DIALECTS))
@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_gateway_tool(gw: Gateway, front: str, api: str, stream: bool) -> None:
    gw.upstream.script(
        [_call("look_up_order", {"order_number": "A-12345"}, "call_g1"), {"content": "It shipped."}]
    )
    reply = await Front(front, gw).ask(f"via-{api}", stream=stream)
    assert reply.text == "It shipped." and reply.calls == []
    assert gw.api.last().path.endswith("/orders/A-12345")
    _upstream_saw(gw, api, 2)
    assert '"raw_path":"/echo/orders/A-12345"' in _tool_result_in(gw.upstream.requests[1], api)
    [record] = await gw.records(conversation_id=reply.conversation)
    assert (record.action, record.outcome, record.injected) == ("look_up_order", "success", True)


@pytest.mark.parametrize("api", list(DIALECTS))
@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_client_tool_round_trip(gw: Gateway, front: str, api: str, stream: bool) -> None:
    client = Front(front, gw)
    gw.upstream.script([_call("get_weather", {"city": "Oslo"}, "call_w1")])
    first = await client.ask(f"via-{api}", stream=stream, tools=True)
    assert first.text == ""
    assert [(name, args) for _, name, args in first.calls] == [("get_weather", {"city": "Oslo"})]
    offered = json.dumps(gw.upstream.requests[0])
    assert "get_weather" in offered and "look_up_order" in offered  # merged with the agent's
    if stream:
        return  # the answer goes back the same way whether the call came streamed or not
    gw.upstream.script([{"content": "Sunny in Oslo."}])
    second = await client.answer(f"via-{api}", first, "sunny, 21 C")
    assert second.text == "Sunny in Oslo."
    _upstream_saw(gw, api, 2)
    assert _tool_result_in(gw.upstream.requests[1], api) == "sunny, 21 C"
    assert gw.api.received == []  # nothing of the gateway's ran
