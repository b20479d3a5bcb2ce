"""Issue 12, items 9 and 10: what the proxy does with hostile upstream output and with an OAuth
token endpoint that cannot be had, through the whole app against a raw upstream that sends
exactly the bytes a test gives it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from gateway.app import Services, create_app
from gateway.definitions.config import parse_config
from gateway.errors import UpstreamError
from gateway.net.sse import ChunkAssembler, LineSplitter, LineTooLong
from gateway.net.upstream import completion_message
from tests.support.action_api import ActionAPI, running_api
from tests.support.gateway import actions

USER = [{"role": "user", "content": "Where is my order A-3?"}]


@dataclass
class Reply:
    """One upstream answer: a JSON body, or SSE bytes written in the given pieces."""

    body: Any = None
    pieces: list[bytes] = field(default_factory=list)


@dataclass
class RawUpstream:
    base_url: str = ""
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, *replies: Reply) -> None:
        self.replies.extend(replies)


STATE = web.AppKey("raw_upstream", RawUpstream)


async def _completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.requests.append(await request.json())
    reply = state.replies.popleft()
    if not reply.pieces:
        return web.json_response(reply.body)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for piece in reply.pieces:
        await response.write(piece)
    await response.write_eof()
    return response


@asynccontextmanager
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    state = RawUpstream()
    app = web.Application()
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", _completions)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    state.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield state
    finally:
        await runner.cleanup()


@dataclass
class Gateway:
    client: httpx.AsyncClient
    upstream: RawUpstream
    api: ActionAPI
    services: Services

    async def chat(self, **body: Any) -> httpx.Response:
        return await self.client.post(
            "/v1/chat/completions", json={"model": "support", "messages": USER, **body}
        )

    async def records(self) -> list[Any]:
        store = self.services.runtime.logstore
        await store.flush()
        return (await store.query())[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _oauth_action(name: str, base: str, token_url: str) -> dict[str, Any]:
    return {
        "name": name,
        "url": f"{base}/protected",
        "auth": {
            "type": "oauth2_client_credentials",
            "token_url": token_url,
            "client_id": "client-abc",
            "client_secret": "{{secrets.CS}}",
        },
    }


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_api() as api, raw_upstream() as upstream:
        extra = [
            # 127.0.0.2 is loopback and not in egress.allow: the guard refuses it.
            _oauth_action("Blocked token", api.base_url, "http://127.0.0.2:9/token"),
            _oauth_action("Refused token", api.base_url, f"http://127.0.0.1:{_closed_port()}/t"),
        ]
        config = parse_config(
            {
                "upstream": {"base_url": upstream.base_url, "api_key": "up-key", "model": "m1"},
                "database": f"sqlite:///{tmp_path / 'gw.db'}",
                "egress": {"allow": ["127.0.0.1"]},
                "secrets": {"CRM": "crm-SECRET-abc987", "CS": "cs-SECRET-91b2"},
                "agents": [{"id": "support", "system_prompt": "Be helpful."}],
                "actions": actions(api.base_url) + extra,
            },
            environ={},
        )
        app = create_app(config)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield Gateway(client, upstream, api, app.state.services)


def completion(message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m1",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }


def tool_call(name: str, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {"id": call_id, "type": "function", "function": function}


def chunk(delta: Any = None, **fields: Any) -> bytes:
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m1"}
    body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": None}]
    body.update(fields)
    return b"data: " + json.dumps(body).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


# --- item 9: an OAuth token that cannot be had is that call's outcome ------------------------


@pytest.mark.parametrize(
    ("tool", "outcome", "reason"),
    [
        ("blocked_token", "blocked", "its token endpoint is not allowed"),
        ("refused_token", "connect_error", "the API's credentials could not be obtained"),
    ],
)
async def test_failed_token_fetch_is_one_calls_outcome_and_the_others_keep_theirs(
    gw: Gateway, tool: str, outcome: str, reason: str
) -> None:
    calls = [
        tool_call(tool, {}, "call_oauth"),
        tool_call("look_up_order", {"order_number": "A-3"}, "call_order"),
    ]
    gw.upstream.answer(
        Reply(completion({"role": "assistant", "content": None, "tool_calls": calls})),
        Reply(completion({"role": "assistant", "content": "Done."})),
    )
    r = await gw.chat()
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Done."
    tool_messages = {
        m["tool_call_id"]: m["content"]
        for m in gw.upstream.requests[1]["messages"]
        if m["role"] == "tool"
    }
    assert set(tool_messages) == {"call_oauth", "call_order"}
    assert tool_messages["call_oauth"].startswith(f"Action {tool} was not run: ")
    assert reason in tool_messages["call_oauth"]
    assert "127.0.0" not in tool_messages["call_oauth"]  # where it failed is for the log
    assert "returned HTTP 200" in tool_messages["call_order"]
    by_call = {record.tool_call_id: record for record in await gw.records()}
    assert by_call["call_oauth"].outcome == outcome
    assert by_call["call_oauth"].injected is True
    assert "OAuth token request to 127.0.0." in (by_call["call_oauth"].error or "")
    assert by_call["call_order"].outcome == "success"
    assert [item.path for item in gw.api.received] == ["/echo/orders/A-3"]  # /protected never


async def test_a_call_that_raises_unexpectedly_is_an_outcome_and_the_others_keep_theirs(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    executor = gw.services.runtime.executor
    real = executor.execute_action

    async def flaky(action: Any, conversation: Any, arguments: Any, **kw: Any) -> Any:
        if "BOOM" in str(arguments):
            raise RuntimeError("a bug nobody foresaw")
        return await real(action, conversation, arguments, **kw)

    monkeypatch.setattr(executor, "execute_action", flaky)
    calls = [
        tool_call("look_up_order", {"order_number": "BOOM"}, "call_boom"),
        tool_call("look_up_order", {"order_number": "A-3"}, "call_ok"),
    ]
    gw.upstream.answer(
        Reply(completion({"role": "assistant", "content": None, "tool_calls": calls})),
        Reply(completion({"role": "assistant", "content": "Done."})),
    )
    r = await gw.chat()
    assert r.status_code == 200, r.text
    tools = {
        m["tool_call_id"]: m["content"]
        for m in gw.upstream.requests[1]["messages"]
        if m["role"] == "tool"
    }
    assert tools["call_boom"] == (
        "Action look_up_order was not run: the gateway could not run it (an internal error, "
        "logged)."
    )
    assert "returned HTTP 200" in tools["call_ok"]
    by_call = {record.tool_call_id: record.outcome for record in await gw.records()}
    assert by_call == {"call_boom": "connect_error", "call_ok": "success"}
    assert "a bug nobody foresaw" not in r.text
    assert any(
        rec.name == "actiongate.proxy" and rec.exc_info is not None for rec in caplog.records
    )


async def test_a_lone_call_that_raises_unexpectedly_is_an_outcome_too(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One call in a round takes another path than several (no gathering): same outcome.
    executor = gw.services.runtime.executor

    async def broken(action: Any, conversation: Any, arguments: Any, **kw: Any) -> Any:
        raise RuntimeError("a bug nobody foresaw")

    monkeypatch.setattr(executor, "execute_action", broken)
    calls = [tool_call("look_up_order", {"order_number": "A-3"}, "call_alone")]
    gw.upstream.answer(
        Reply(completion({"role": "assistant", "content": None, "tool_calls": calls})),
        Reply(completion({"role": "assistant", "content": "Sorry."})),
    )
    r = await gw.chat()
    assert r.status_code == 200, r.text
    [tool] = [m for m in gw.upstream.requests[1]["messages"] if m["role"] == "tool"]
    assert tool["content"].endswith("the gateway could not run it (an internal error, logged).")
    assert {record.tool_call_id: record.outcome for record in await gw.records()} == {
        "call_alone": "connect_error"
    }


@pytest.mark.parametrize("count", [1, 2], ids=["one call", "two calls"])
async def test_a_client_that_goes_away_does_not_cut_its_actions_off_before_they_are_logged(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    executor = gw.services.runtime.executor
    real = executor.execute_action
    started, go_on = asyncio.Event(), asyncio.Event()

    async def held(action: Any, conversation: Any, arguments: Any, **kw: Any) -> Any:
        started.set()
        await go_on.wait()
        return await real(action, conversation, arguments, **kw)

    monkeypatch.setattr(executor, "execute_action", held)
    calls = [
        tool_call("look_up_order", {"order_number": f"A-{n}"}, f"call_{n}") for n in range(count)
    ]
    gw.upstream.answer(
        Reply(completion({"role": "assistant", "content": None, "tool_calls": calls})),
        Reply(completion({"role": "assistant", "content": "Done."})),
    )
    request = asyncio.ensure_future(gw.chat())
    await started.wait()
    request.cancel()  # the client hangs up while its actions run
    with pytest.raises(asyncio.CancelledError):
        await request
    go_on.set()
    for _ in range(250):  # the actions finish, and are logged, after the client left
        records = await gw.records()
        if len(records) >= count:
            break
        await asyncio.sleep(0.02)
    assert sorted((r.tool_call_id, r.outcome) for r in records) == [
        (f"call_{n}", "success") for n in range(count)
    ]
    assert len(gw.api.received) == count


# --- item 9: malformed model output is a 502 in OpenAI's shape, and nothing runs -------------

MALFORMED = [
    pytest.param(
        completion({"role": "assistant", "tool_calls": {"0": {"id": "x"}}}),
        "choices[0].message.tool_calls is not a list",
        id="tool_calls-object",
    ),
    pytest.param(
        completion(
            {
                "role": "assistant",
                "tool_calls": [tool_call("look_up_order", {"order_number": "A-1"}, "c1"), "x"],
            }
        ),
        "choices[0].message.tool_calls[1] is not an object",
        id="call-string",
    ),
    pytest.param(
        completion(
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": "look_up_order"}],
            }
        ),
        "choices[0].message.tool_calls[0].function is not an object",
        id="function-string",
    ),
    pytest.param(completion("hello"), "choices[0].message is not an object", id="message-string"),
    pytest.param(
        {"id": "x", "choices": ["hello"]}, "choices[0] is not an object", id="choice-string"
    ),
    pytest.param(
        {"id": "x", "choices": "hello"}, "choices is not a non-empty list", id="choices-string"
    ),
]


@pytest.mark.parametrize(("body", "named"), MALFORMED)
async def test_malformed_completion_is_502_and_runs_nothing(
    gw: Gateway, body: dict[str, Any], named: str
) -> None:
    gw.upstream.answer(Reply(body))
    r = await gw.chat()
    assert r.status_code == 502
    error = r.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "upstream_error"
    assert error["code"] == "upstream_error"
    assert error["message"] == f"the upstream sent a malformed completion: {named}"
    assert gw.api.received == []  # a half-garbled answer runs none of its calls
    assert await gw.records() == []


STREAM_MALFORMED = [
    pytest.param(
        {"tool_calls": [{"index": "abc", "id": "c1", "function": {"name": "look_up_order"}}]},
        {},
        "choices[0].delta.tool_calls[0].index is not an integer",
        id="index-abc",
    ),
    pytest.param(
        {"tool_calls": [{"index": None, "id": "c1", "function": {"name": "look_up_order"}}]},
        {},
        "choices[0].delta.tool_calls[0].index is not an integer",
        id="index-null",
    ),
    pytest.param(None, {"choices": "abc"}, "choices is not a list", id="choices-string"),
    pytest.param(
        {"tool_calls": [{"index": 0, "id": "c1", "function": "look_up_order"}]},
        {},
        "choices[0].delta.tool_calls[0].function is not an object",
        id="function-string",
    ),
]


async def _events(gw: Gateway) -> tuple[int, list[str]]:
    body = {"model": "support", "messages": USER, "stream": True}
    async with gw.client.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = [line async for line in r.aiter_lines()]
        return r.status_code, [line[6:] for line in lines if line.startswith("data: ")]


@pytest.mark.parametrize(("delta", "fields", "named"), STREAM_MALFORMED)
async def test_malformed_stream_chunk_before_the_stream_started_is_502(
    gw: Gateway, delta: Any, fields: dict[str, Any], named: str
) -> None:
    gw.upstream.answer(Reply(pieces=[chunk(delta, **fields), DONE]))
    r = await gw.chat(stream=True)
    assert r.status_code == 502
    assert r.json() == {
        "error": {
            "message": f"the upstream sent a malformed completion: {named}",
            "type": "upstream_error",
            "code": "upstream_error",
            "param": None,
        }
    }
    assert gw.api.received == []
    assert await gw.records() == []


@pytest.mark.parametrize(("delta", "fields", "named"), STREAM_MALFORMED)
async def test_malformed_stream_chunk_after_the_stream_started_is_one_error_event(
    gw: Gateway, delta: Any, fields: dict[str, Any], named: str
) -> None:
    gw.upstream.answer(Reply(pieces=[chunk({"content": "Let me check"}), chunk(delta, **fields)]))
    status, events = await _events(gw)
    assert status == 200
    assert [json.loads(e) for e in events[-1:]] == [
        {
            "error": {
                "message": f"the upstream sent a malformed completion: {named}",
                "type": "upstream_error",
                "code": "upstream_error",
            }
        }
    ]
    text = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert text == ["", "Let me check"]  # the role chunk, the content, then the error: no [DONE]
    assert gw.api.received == []


def test_assembler_and_completion_check_accept_what_openai_sends() -> None:
    assembler = ChunkAssembler()
    assembler.add({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]})
    head = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    assembler.add({"choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})
    part = {"index": 0, "function": {"arguments": "{}"}}
    assembler.add({"choices": [{"index": 0, "delta": {"tool_calls": [part]}}], "usage": None})
    assert assembler.message()["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    message = {"role": "assistant", "content": "hi", "tool_calls": None}
    assert completion_message(completion(message)) == message
    with pytest.raises(UpstreamError) as info:
        assembler.add(["not", "an", "object"])
    assert info.value.status == 502


# --- item 10: SSE lines are split by the gateway, with its own 4 MiB cap ---------------------


async def test_event_line_longer_than_aiohttps_readline_limit_is_delivered(gw: Gateway) -> None:
    big = "x" * (1 << 20)  # 1 MiB on one line: past aiohttp's 128-512 KiB readline limit
    line = chunk({"content": big})
    pieces = [
        chunk({"role": "assistant"}),
        *[line[i : i + 50_000] for i in range(0, len(line), 50_000)],
    ]
    gw.upstream.answer(Reply(pieces=[*pieces, chunk({}), DONE]))
    status, events = await _events(gw)
    assert status == 200
    assert events[-1] == "[DONE]"
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or ""
        for e in events[:-1]
        if json.loads(e).get("choices")
    )
    assert text == big


async def test_event_line_over_4_mib_is_502_without_reading_it_all(gw: Gateway) -> None:
    piece = b"data: " + b"x" * (1 << 20)
    gw.upstream.answer(Reply(pieces=[piece] * 6 + [b"\n\n", DONE]))  # one 6 MiB line
    r = await gw.chat(stream=True)
    assert r.status_code == 502
    assert r.json()["error"] == {
        "message": "the upstream sent an event line longer than 4 MiB",
        "type": "upstream_error",
        "code": "upstream_error",
        "param": None,
    }


def test_line_splitter_joins_pieces_strips_crlf_and_caps_one_line() -> None:
    lines = LineSplitter(10)
    assert lines.feed(b"data: 1") == []
    assert lines.feed(b"2\r\n\r\ndata: 3\nda") == [b"data: 12", b"", b"data: 3"]
    assert lines.feed(b"ta: 4") == []
    assert lines.finish() == [b"data: 4"]
    assert lines.finish() == []
    with pytest.raises(LineTooLong):
        lines.feed(b"x" * 12)
    with pytest.raises(LineTooLong):
        LineSplitter(10).feed(b"ok\n" + b"y" * 11 + b"\nok\n")
