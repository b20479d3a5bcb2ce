"""SIGTERM under load: a real ``actiongate serve`` finishes what it accepted, then exits 0.

Fifty customers ask at once, half of them streamed. The scripted upstream holds every first
reply for a moment (``delay_s``), then says a few words and calls an action on a local API that
takes its time too; a second upstream call gives the answer. The gateway is told to stop at one
of two moments: while every request waits for the model, or once every stream has started (its
first words are on the wire) and the actions are running. Graceful shutdown must let all of them
finish with a complete answer, exit with status 0, and leave exactly one log record per
execution the customers were told about, each marked ``injected`` (the model got its result).

At the end: tests for gateway bugs found by ``bench/load_fault.py``, fixed since.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from aiohttp import web

from examples.scripted_upstream import FIXED_TEXT, ScriptedUpstream, running_upstream
from gateway.app import create_app
from gateway.definitions.config import parse_config
from gateway.stores.conversations import ConversationStore
from gateway.stores.engines import create_engine
from tests.support.gateway import running_gateway
from tests.support.serve import GatewayProcess, start_gateway

pytestmark = pytest.mark.filterwarnings("error")

REQUESTS = 50
UPSTREAM_DELAY_S = 1.0
"""How long the upstream sits on every first reply: the window in which SIGTERM arrives."""
ACTION_DELAY_S = 1.0
"""The action API's own time: the window in which streams have started and none has ended."""
PREFACE = "Let me check."
"""What the model says before its tool call (streamed at once, before the action runs)."""
TOOL = "look_up_order"
TIME_BUDGET_S = 28.0
"""For the whole test, the gateway's start included."""
POLL_S = 0.02


@dataclass
class OrdersAPI:
    """A local action API: ``GET /orders/{number}`` answers after :data:`ACTION_DELAY_S`."""

    base_url: str = ""
    received: list[str] = field(default_factory=list)


@asynccontextmanager
async def running_orders_api() -> AsyncIterator[OrdersAPI]:
    api = OrdersAPI()

    async def order(request: web.Request) -> web.Response:
        number = request.match_info["number"]
        api.received.append(number)
        await asyncio.sleep(ACTION_DELAY_S)
        return web.json_response({"order_number": number, "status": "shipped"})

    app = web.Application()
    app.router.add_get("/orders/{number}", order)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        api.base_url = f"http://{host}:{port}"
        yield api
    finally:
        await runner.cleanup()


def gateway_config(upstream: ScriptedUpstream, api: OrdersAPI, database: str) -> dict[str, Any]:
    return {
        "upstream": {"base_url": upstream.base_url, "model": "scripted", "timeout_s": 20},
        "database": database,
        "egress": {"allow": ["127.0.0.1"]},
        # Fifty calls to one action at once: above the default concurrency cap of 32.
        "limits": {"concurrency": 2 * REQUESTS, "rate": 2 * REQUESTS},
        "agents": [{"id": "support", "actions": [TOOL]}],
        "actions": [
            {
                "name": "Look up order",
                "description": "Look up one order by its number.",
                "method": "GET",
                "url": api.base_url + "/orders/{{args.order_number}}",
                "parameters": {"order_number": {"type": "string", "required": True}},
            }
        ],
    }


def question(n: int) -> str:
    return f"Where is my order? (customer {n})"


@dataclass
class Answer:
    """What one customer received."""

    status: int
    content: str
    finish_reason: str | None
    executions: list[dict[str, Any]]
    complete: bool
    """Non-streamed: a parsed completion. Streamed: the last chunk, then ``[DONE]``."""


async def ask(client: httpx.AsyncClient, n: int, *, stream: bool, started: set[int]) -> Answer:
    """Ask question ``n``; a streamed request adds ``n`` to ``started`` at its first event."""
    body = {
        "model": "support",
        "stream": stream,
        "messages": [{"role": "user", "content": question(n)}],
        "conversation": {"id": f"shutdown-{n}"},
    }
    if not stream:
        response = await client.post("/v1/chat/completions", json=body)
        if response.status_code != 200:
            return Answer(response.status_code, response.text, None, [], False)
        data = response.json()
        choice = data["choices"][0]
        ext = data["actiongate"]
        return Answer(
            200, choice["message"]["content"], choice["finish_reason"], ext["executions"], True
        )
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return Answer(response.status_code, (await response.aread()).decode(), None, [], False)
        events = []
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
                started.add(n)
    complete = len(events) >= 2 and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    last = chunks[-1] if chunks else {}
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    finish = last["choices"][0]["finish_reason"] if last.get("choices") else None
    executions = last.get("actiongate", {}).get("executions", [])
    return Answer(200, text, finish, executions, complete and "actiongate" in last)


async def wait_for(
    condition: Callable[[], bool], what: str, process: subprocess.Popen[bytes]
) -> None:
    """Poll ``condition()`` until true; fail early if the gateway process has exited."""
    while not condition():
        assert process.poll() is None, f"the gateway exited while waiting for {what}"
        await asyncio.sleep(POLL_S)


def first_round_questions(upstream: ScriptedUpstream) -> set[str]:
    """The customer questions whose first upstream call has arrived."""
    found = set()
    for body in upstream.requests:
        last = body["messages"][-1]
        if last["role"] == "user":
            found.add(last["content"])
    return found


def stored_records(db_path: Path) -> list[dict[str, Any]]:
    """Every execution record in the gateway's SQLite database (read after it has exited)."""
    with closing(sqlite3.connect(db_path)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT id, outcome, injected, injected_content FROM executions")
        return [{**row, "injected": bool(row["injected"])} for row in rows]


@pytest.mark.parametrize("moment", ["waiting_for_model", "mid_stream"])
async def test_sigterm_under_load_finishes_every_accepted_request(
    tmp_path: Path, moment: Literal["waiting_for_model", "mid_stream"]
) -> None:
    async with (
        asyncio.timeout(TIME_BUDGET_S),
        running_upstream() as upstream,
        running_orders_api() as api,
    ):
        # One delayed tool call per customer; every later upstream call gets the fixed text.
        upstream.script(
            {
                "content": PREFACE,
                "tool_calls": [{"name": TOOL, "arguments": {"order_number": f"A-{n:05d}"}}],
                "delay_s": UPSTREAM_DELAY_S,
            }
            for n in range(REQUESTS)
        )
        database = f"sqlite:///{tmp_path / 'gateway.db'}"
        gateway: GatewayProcess = await asyncio.to_thread(
            start_gateway,
            tmp_path,
            gateway_config(upstream, api, database),
            {"ACTIONGATE_ADMIN_TOKEN": "shutdown-test-admin-token"},
        )
        process = gateway.process
        try:
            limits = httpx.Limits(max_connections=2 * REQUESTS)
            async with (
                httpx.AsyncClient(
                    base_url=gateway.url, timeout=20, limits=limits, trust_env=False
                ) as client,
                asyncio.TaskGroup() as group,
            ):
                started: set[int] = set()
                tasks = [
                    group.create_task(ask(client, n, stream=n % 2 == 1, started=started))
                    for n in range(REQUESTS)
                ]
                expected = {question(n) for n in range(REQUESTS)}
                # Accepted = the gateway has read the request and called the upstream for it.
                await wait_for(
                    lambda: first_round_questions(upstream) >= expected,
                    "every request to reach the upstream",
                    process,
                )
                if moment == "mid_stream":
                    streams = set(range(1, REQUESTS, 2))
                    await wait_for(lambda: started >= streams, "every stream to start", process)
                assert not any(t.done() for t in tasks), "SIGTERM must find every request running"
                process.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(process.wait, TIME_BUDGET_S)
        finally:
            if process.poll() is None:
                process.kill()
                await asyncio.to_thread(process.wait)
    answers = [task.result() for task in tasks]

    output = gateway.logs_text()
    assert status == 0, output
    assert "Traceback" not in output and "unstored" not in output, output

    for n, got in enumerate(answers):
        kind = "streamed" if n % 2 else "plain"
        assert got.status == 200, (n, kind, got.content)
        assert got.complete, (n, kind, got)
        # A stream carries every round's words; a completion the last message only.
        text = PREFACE + FIXED_TEXT if n % 2 else FIXED_TEXT
        assert (got.content, got.finish_reason) == (text, "stop"), (n, kind, got)

    seen = [e for got in answers for e in got.executions]
    assert len(seen) == REQUESTS, seen
    assert {e["outcome"] for e in seen} == {"success"}
    assert sorted(api.received) == [f"A-{n:05d}" for n in range(REQUESTS)]

    records = stored_records(gateway.db_path)
    by_id = {r["id"]: r for r in records}
    assert len(by_id) == len(records) == REQUESTS, "one record per execution, no more"
    assert by_id.keys() == {e["id"] for e in seen}
    for record in records:
        assert record["outcome"] == "success", record
        assert record["injected"] is True, record
        assert record["injected_content"], record


# --- gateway bugs found by bench/load_fault.py ----------------------------------------------


async def test_calls_returned_in_the_last_round_are_not_run(tmp_path: Path) -> None:
    call = {"name": "look_up_order", "arguments": {"order_number": "A-10023"}}
    async with running_gateway(tmp_path, max_rounds=1) as gw:
        # A model (or an OpenAI-compatible server) that ignores tool_choice "none".
        gw.upstream.script([{"tool_calls": [call]}, {"tool_calls": [call]}])
        response = await gw.chat(messages=[{"role": "user", "content": "Where is A-10023?"}])
        records = await gw.records()
    assert response.status_code == 200
    assert [body.get("tool_choice") for body in gw.upstream.requests] == [None, "none"]
    assert len(gw.api.received) == 1, "max_rounds=1 allows one round of actions"
    assert all(r.injected for r in records if r.outcome == "success")


async def test_exhausted_database_pool_is_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", "pool-test-admin-token")
    database = f"sqlite:///{tmp_path / 'gw.db'}"
    config = parse_config(
        {
            "upstream": {"base_url": "http://127.0.0.1:9/v1"},  # never reached
            "database": database,
            "agents": [{"id": "support"}],
        },
        environ={},
    )
    app = create_app(config)
    # A pool of one connection, held below: the conversation state cannot be loaded.
    engine = create_engine(database, pool_size=1, max_overflow=0, pool_timeout=0.2)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://gw") as client,
        ):
            app.state.services.proxy.states = ConversationStore(engine)
            async with engine.connect():
                response = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "support",
                        "messages": [{"role": "user", "content": "Hello"}],
                        "conversation": {"id": "busy-1"},
                    },
                )
    finally:
        await engine.dispose()
    assert response.status_code == 503, response.text
    assert response.headers.get("retry-after")
    assert response.json()["error"]["type"] != "server_error"


async def test_stream_past_the_upstream_deadline_ends_with_an_error_event(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(TIME_BUDGET_S), running_upstream() as upstream:
        # The first words come at once, the rest take 1.2 s: past the 0.5 s deadline.
        words = " ".join(f"word{i}" for i in range(12))
        upstream.script([{"content": words, "chunk_delay_s": 0.1}])
        config = {
            "upstream": {"base_url": upstream.base_url, "timeout_s": 0.5},
            "database": f"sqlite:///{tmp_path / 'gateway.db'}",
            "agents": [{"id": "support"}],
        }
        gateway: GatewayProcess = await asyncio.to_thread(
            start_gateway, tmp_path, config, {"ACTIONGATE_ADMIN_TOKEN": "stream-test-token"}
        )
        events: list[str] = []
        broken: str | None = None
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
                messages = [{"role": "user", "content": "Hello"}]
                body = {"model": "support", "stream": True, "messages": messages}
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    try:
                        async for line in response.aiter_lines():
                            if line.startswith("data: "):
                                events.append(line.removeprefix("data: "))
                    except httpx.RemoteProtocolError as e:
                        broken = str(e)
        finally:
            status = await asyncio.to_thread(gateway.stop, 10.0)
    assert status == 0
    assert events, "the stream started"
    assert broken is None, f"the stream was cut: {broken}"
    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout", events[-1]
    assert "CancelledError" not in gateway.logs_text()
