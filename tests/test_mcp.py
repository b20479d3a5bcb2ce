"""MCP: the agent's http actions as tools, driven by the official ``mcp`` client.

Over stdio the server is a real subprocess (``serve_stdio``); over streamable HTTP it is the
gateway app with :class:`gateway.mcp.http.McpHttp` mounted at ``/mcp``, served by uvicorn on a
loopback socket. Each test calls actions against the local action API, then checks what the API
received and the execution log: same executor, one conversation per session, channel-free lead
so ``lead.email`` is refused by name, and write actions without the chat confirmation.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
from fastapi import FastAPI
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from adapters.mcp import to_mcp_tool, to_mcp_tools
from gateway.app import Services, create_app
from gateway.definitions.config import load_config
from gateway.definitions.tools import to_tool_definitions
from gateway.mcp.http import McpHttp
from gateway.stores.engines import create_engine
from gateway.stores.logs import ExecutionRecord, LogStore
from tests.support.action_api import ActionAPI, running_api
from tests.support.gateway import CRM_SECRET, actions

ROOT = Path(__file__).resolve().parents[1]
CLIENT_KEY = "sk-mcp-client-key-123"
HTTP_TOOLS = ["get_customer_account", "look_up_order", "submit_refund"]
LISTED_TOOLS = [*HTTP_TOOLS, "return_request"]  # forms too: they are asked by elicitation
ACTIONGATE = str(Path(sys.executable).parent / "actiongate")


def write_config(tmp_path: Path, api: ActionAPI) -> Path:
    path = tmp_path / "actiongate.json"
    config = {
        "database": f"sqlite:///{tmp_path / 'mcp.db'}",
        "egress": {"allow": ["127.0.0.1"]},
        "secrets": {"CRM": CRM_SECRET},
        "agents": [{"id": "support", "api_keys": [CLIENT_KEY]}],
        "actions": actions(api.base_url),
    }
    path.write_text(json.dumps(config))
    return path


def text(result: CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def stored_records(database: str) -> list[ExecutionRecord]:
    """Oldest first, read with a store of our own once the server has flushed and closed."""
    engine = create_engine(database)
    try:
        records, _ = await LogStore(engine).query(limit=100)
    finally:
        await engine.dispose()
    return records[::-1]


async def exercise(client: Client, api: ActionAPI) -> None:
    """The calls every transport must answer the same way (see :func:`check_records`)."""
    ok = await client.call_tool("look_up_order", {"order_number": "A-12345"})
    assert not ok.is_error
    assert "/echo/orders/A-12345" in text(ok)
    assert api.last().path == "/echo/orders/A-12345"

    sent = len(api.received)
    refused = await client.call_tool("get_customer_account", {})
    assert refused.is_error
    assert "lead.email" in text(refused)
    assert len(api.received) == sent  # nothing was sent

    # A write action runs at once: no confirmation round trip as in the chat.
    posted = await client.call_tool("submit_refund", {"order_number": "A-1"})
    assert not posted.is_error, text(posted)
    assert api.last().method == "POST"
    assert json.loads(api.last().body) == {"order": "A-1"}  # the empty lead.email is left out

    form = await client.call_tool("return_request", {})
    assert form.is_error
    assert "return_request" in text(form)
    unknown = await client.call_tool("no_such_tool", {"x": 1})
    assert unknown.is_error
    assert "no_such_tool" in text(unknown)
    bad_args = await client.call_tool("look_up_order", {})
    assert bad_args.is_error
    assert "order_number" in text(bad_args)


def check_records(records: list[ExecutionRecord]) -> None:
    assert [(r.action, r.outcome) for r in records] == [
        ("look_up_order", "success"),
        ("get_customer_account", "rejected"),
        ("submit_refund", "success"),
        ("return_request", "rejected"),
        ("no_such_tool", "rejected"),
        ("look_up_order", "rejected"),
    ]
    for record in records:
        assert record.agent_id == "support"
        assert record.tool_call_id is not None and record.tool_call_id.startswith("mcp_")
        assert record.injected
    assert records[0].response is not None and records[0].response["status_code"] == 200
    assert records[1].error is not None and "lead.email" in records[1].error
    assert records[2].request["method"] == "POST"
    assert records[2].injected_content is not None and "refunds" in records[2].injected_content


def check_tools(listed: list[Any], config_path: Path) -> None:
    """The http tools are exactly what ``export --format mcp`` prints; the form follows them."""
    config = load_config(config_path)
    definitions = to_tool_definitions(config.agent_actions("support"))
    exported = to_mcp_tools(definitions)
    dumped = [t.model_dump(by_alias=True, exclude_none=True) for t in listed]
    assert [t["name"] for t in dumped] == LISTED_TOOLS
    assert dumped[: len(HTTP_TOOLS)] == exported
    form = next(d for d in definitions if d.name == "return_request")
    assert dumped[-1] == to_mcp_tool(form)
    assert dumped[-1]["inputSchema"]["required"] == []  # every field is an optional prefill
    by_name = {t["name"]: t for t in dumped}
    assert "When NOT to use" in by_name["get_customer_account"]["description"]
    hints = {n: t["annotations"] for n, t in by_name.items()}
    assert hints["look_up_order"]["readOnlyHint"] and hints["look_up_order"]["idempotentHint"]
    assert not hints["look_up_order"]["destructiveHint"]
    assert hints["submit_refund"]["destructiveHint"]
    assert not hints["submit_refund"]["readOnlyHint"]
    assert not hints["submit_refund"]["idempotentHint"]


# --- stdio ----------------------------------------------------------------------------------


async def test_stdio_serves_http_actions_through_the_executor(tmp_path: Path) -> None:
    async with running_api() as api:
        config_path = write_config(tmp_path, api)
        params = StdioServerParameters(
            command=ACTIONGATE,
            args=["mcp", str(config_path), "--agent", "support"],
            cwd=ROOT,
            env=dict(os.environ),  # the SDK passes only a few variables; keep PYTHONPATH
        )
        with (tmp_path / "stderr.txt").open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                check_tools((await client.list_tools()).tools, config_path)
                await exercise(client, api)
        # The client waited for the process to exit, so its log is flushed and closed.
        records = await stored_records(f"sqlite:///{tmp_path / 'mcp.db'}")
    check_records(records)
    # One process is one session: one conversation.
    assert len({r.conversation_id for r in records}) == 1


async def test_stdio_unknown_agent_is_a_one_line_error(tmp_path: Path) -> None:
    async with running_api() as api:
        config_path = write_config(tmp_path, api)
    process = await asyncio.create_subprocess_exec(
        ACTIONGATE,
        "mcp",
        str(config_path),
        "--agent",
        "nobody",
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode != 0
    assert out == b""
    assert b"unknown agent 'nobody' (agents: support)" in err


async def test_stdio_sigterm_keeps_the_log(tmp_path: Path) -> None:
    async with running_api() as api:
        config_path = write_config(tmp_path, api)
        process = await asyncio.create_subprocess_exec(
            *(ACTIONGATE, "mcp", str(config_path), "--agent", "support"),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None

        async def request(message: dict[str, Any]) -> dict[str, Any] | None:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
            await process.stdin.drain()
            if "id" not in message:
                return None
            answer: dict[str, Any] = json.loads(await process.stdout.readline())
            return answer

        hello = {"name": "raw", "version": "1"}
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": hello}
        await request({"id": 1, "method": "initialize", "params": params})
        await request({"method": "notifications/initialized"})
        call = {"name": "look_up_order", "arguments": {"order_number": "B-2"}}
        answer = await request({"id": 2, "method": "tools/call", "params": call})
        assert answer is not None and answer["result"]["isError"] is False
        # Stdin stays open: the signal alone must end the process, with the log written.
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == -signal.SIGTERM
        process.stdin.close()
        records = await stored_records(f"sqlite:///{tmp_path / 'mcp.db'}")
    assert [(r.action, r.outcome, r.injected) for r in records] == [
        ("look_up_order", "success", True)
    ]


# --- streamable HTTP ------------------------------------------------------------------------


@asynccontextmanager
async def serving(tmp_path: Path, api: ActionAPI) -> AsyncIterator[tuple[str, Services]]:
    """The gateway with MCP mounted as ``create_app`` would, served on a loopback socket."""
    app: FastAPI = create_app(load_config(write_config(tmp_path, api)))
    mcp = McpHttp(lambda: app.state.services)
    app.mount("/mcp", mcp)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # Listening before uvicorn starts: early connections wait in the backlog, no polling.
    sock.listen()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    async with app.router.lifespan_context(app), mcp.run():
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield f"http://127.0.0.1:{port}", app.state.services
        finally:
            server.should_exit = True
            await task
            sock.close()


@asynccontextmanager
async def mcp_client(
    url: str, key: str | None = CLIENT_KEY, **options: Any
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), **options) as client,
    ):
        yield client


async def logged(services: Services) -> list[ExecutionRecord]:
    store = services.runtime.logstore
    await store.flush()
    records, _ = await store.query(limit=100)
    return records[::-1]


async def test_http_serves_http_actions_through_the_executor(tmp_path: Path) -> None:
    async with running_api() as api, serving(tmp_path, api) as (base, services):
        async with mcp_client(f"{base}/mcp/support") as client:
            assert client.protocol_version == "2026-07-28"  # the SDK's default, stateless era
            check_tools((await client.list_tools()).tools, tmp_path / "actiongate.json")
            await exercise(client, api)
        records = await logged(services)
    check_records(records)
    # Stateless requests: each call is a conversation of its own.
    assert len({r.conversation_id for r in records}) == len(records)


async def test_http_session_is_one_conversation(tmp_path: Path) -> None:
    async with running_api() as api, serving(tmp_path, api) as (base, services):
        for _ in range(2):
            async with mcp_client(f"{base}/mcp/support", mode="legacy") as client:
                for number in ("A-1", "A-2"):
                    result = await client.call_tool("look_up_order", {"order_number": number})
                    assert not result.is_error
        records = await logged(services)
    assert [r.outcome for r in records] == ["success"] * 4
    first, second = (records[0].conversation_id, records[2].conversation_id)
    assert [r.conversation_id for r in records] == [first, first, second, second]
    assert first != second


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_http_needs_the_agents_client_key(tmp_path: Path, key: str | None) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with running_api() as api, serving(tmp_path, api) as (base, services):
        async with httpx.AsyncClient(base_url=base) as http:
            denied = await http.post("/mcp/support", json=initialize, headers=headers)
            unknown = await http.post("/mcp/nobody", json=initialize, headers=headers)
            headers["Authorization"] = f"Bearer {CLIENT_KEY}"
            allowed = await http.post("/mcp/support", json=initialize, headers=headers)
        # The official client gives up with the gateway's reason.
        with pytest.RaisesGroup(
            pytest.RaisesExc(MCPError, match="client key for agent 'support'"),
            flatten_subgroups=True,
        ):
            async with mcp_client(f"{base}/mcp/support", key=key):
                pass
        records = await logged(services)
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"].startswith("Bearer")
    assert "client key" in denied.json()["error"]["message"]
    assert unknown.status_code == 404
    assert allowed.status_code == 200
    assert records == []
