"""Concurrent requests of one conversation lose none of each other's changes.

Store level, on a SQLite file and on PostgreSQL (the ``database`` fixture): writers that all
read the same row and then write at once keep every lead field and pending entry they added,
and a removal (a confirmation answered) stays removed next to a concurrent addition. The
common case is one statement.

Two replicas: two gateway apps on one database (a SQLite file, then a PostgreSQL database)
behind a scripted upstream that holds every request at a barrier until all have loaded the
conversation, so each request starts from the same stored state. Each captures a different
``lead`` field through a form; all must be stored afterwards. Under "the last write wins" only
one of them survived.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock

import httpx
import pytest
from aiohttp import web
from sqlalchemy import event, insert, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.definitions.config import parse_config
from gateway.stores.conversations import NO_ROW, ConversationStore, StateChange
from gateway.stores.db import MIGRATIONS, migrate, schema_migrations
from gateway.stores.engines import create_engine
from tests.conftest import Database

WRITERS = 8
"""Concurrent writers (or requests) per test: enough that every interleaving gets exercised."""
BARRIER_S = 10.0
"""How long the upstream waits for every request to arrive (only reached if one never does)."""


# --- what a turn changes --------------------------------------------------------------------


def test_a_change_is_replayed_entry_by_entry_on_top_of_another_writers() -> None:
    loaded = {"lead": {"name": "Jo"}, "pending": {"c1": {"kind": "confirm"}}, "user_id": "u1"}
    mine = {"lead": {"name": "Jo", "email": "jo@example.com"}, "pending": {}, "user_id": "u1"}
    theirs = {
        "lead": {"name": "Jo", "phone": "555"},
        "pending": {"c1": {"kind": "confirm"}, "f2": {"kind": "form"}},
        "user_id": "u1",
        "channel": "web",
    }
    merged = StateChange.between(loaded, mine).apply(theirs)
    assert merged == {
        "lead": {"name": "Jo", "phone": "555", "email": "jo@example.com"},
        "pending": {"f2": {"kind": "form"}},  # c1 answered here, f2 added there: both kept
        "user_id": "u1",
        "channel": "web",
    }
    assert theirs["pending"] == {"c1": {"kind": "confirm"}, "f2": {"kind": "form"}}  # untouched


def test_a_key_both_writers_changed_takes_this_writers_value() -> None:
    loaded = {"lead": {"email": "old@example.com"}, "channel": "web"}
    mine = {"lead": {"email": "mine@example.com"}, "channel": "sms"}
    theirs = {"lead": {"email": "theirs@example.com"}, "channel": "email"}
    merged = StateChange.between(loaded, mine).apply(theirs)
    assert merged == {"lead": {"email": "mine@example.com"}, "channel": "sms"}


def test_no_change_is_empty_and_added_results_go_last() -> None:
    state = {"lead": {"a": "1"}, "results": {"r1": {"content": "x"}}}
    assert not StateChange.between(state, json.loads(json.dumps(state)))
    mine = {"lead": {"a": "1"}, "results": {"r1": {"content": "x"}, "r3": {"content": "z"}}}
    theirs = {"results": {"r1": {"content": "x"}, "r2": {"content": "y"}}}
    merged = StateChange.between(state, mine).apply(theirs)
    assert list(merged["results"]) == ["r1", "r2", "r3"]  # the oldest is still dropped first


# --- the store, on SQLite and PostgreSQL ----------------------------------------------------


async def test_concurrent_writers_from_one_read_keep_every_addition(db_engine: AsyncEngine) -> None:
    store = ConversationStore(db_engine)
    await store.save("c-1", "support", {"lead": {"name": "Jo"}, "pending": {}})
    seen = await store.read("c-1", "support")
    assert seen.version == 1

    async def turn(i: int) -> None:
        mine = json.loads(json.dumps(seen.state))
        mine["lead"][f"f{i}"] = f"v{i}"
        mine["pending"][f"call_{i}"] = {"kind": "form", "tool": "profile"}
        await store.update("c-1", "support", StateChange.between(seen.state, mine), seen)

    await asyncio.gather(*(turn(i) for i in range(WRITERS)))
    final = await store.read("c-1", "support")
    assert final.state["lead"] == {"name": "Jo"} | {f"f{i}": f"v{i}" for i in range(WRITERS)}
    assert set(final.state["pending"]) == {f"call_{i}" for i in range(WRITERS)}
    assert final.version == 1 + WRITERS  # every write counted, none skipped


async def test_concurrent_first_saves_of_a_new_conversation_keep_every_field(
    db_engine: AsyncEngine,
) -> None:
    store = ConversationStore(db_engine)

    async def turn(i: int) -> None:
        change = StateChange.between({}, {"lead": {f"f{i}": f"v{i}"}, "channel": "web"})
        await store.update("c-new", "support", change, NO_ROW)

    await asyncio.gather(*(turn(i) for i in range(WRITERS)))
    final = await store.read("c-new", "support")
    assert final.state == {"lead": {f"f{i}": f"v{i}" for i in range(WRITERS)}, "channel": "web"}
    assert final.version == WRITERS


@pytest.mark.parametrize("first", ["answer", "add"])
async def test_an_answered_confirmation_stays_removed_beside_a_new_one(
    db_engine: AsyncEngine, first: str
) -> None:
    store = ConversationStore(db_engine)
    confirm = {"kind": "confirm", "tool": "submit_refund"}
    seen = await store.save("c-2", "support", {"pending": {"c1": confirm}})
    answered = StateChange.between(seen.state, {"pending": {}})
    added = StateChange.between(seen.state, {"pending": {"c1": confirm, "c2": confirm}})
    changes = [answered, added] if first == "answer" else [added, answered]
    for change in changes:  # both from the same read: the second one conflicts
        await store.update("c-2", "support", change, seen)
    assert (await store.load("c-2", "support")) == {"pending": {"c2": confirm}}


async def test_each_write_increments_the_version_and_needs_one_statement(
    db_engine: AsyncEngine,
) -> None:
    store = ConversationStore(db_engine)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in ("SELECT", "INSERT", "UPDATE"):
            statements.append(verb)

    event.listen(db_engine.sync_engine, "before_cursor_execute", record)
    try:
        seen = NO_ROW
        state: dict[str, Any] = {}
        for i in range(3):
            mine = {**state, "lead": {**state.get("lead", {}), f"f{i}": "x"}}
            seen = await store.update("c-3", "support", StateChange.between(state, mine), seen)
            state = mine
            assert seen.version == i + 1
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", record)
    assert statements == ["INSERT", "UPDATE", "UPDATE"]  # no read before a write that fits
    assert await store.read("c-3", "support") == seen


async def test_a_row_that_keeps_vanishing_is_still_merged_with_a_warning(
    db_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = ConversationStore(db_engine)
    seen = await store.save("c-4", "support", {"lead": {"name": "Jo"}})
    await store.save("c-4", "support", {"channel": "web"})  # makes `seen` stale
    vanished = AsyncMock(return_value=None)  # as if the row were deleted under every lock
    monkeypatch.setattr(store, "_merge_locked", vanished)
    change = StateChange.between(seen.state, {"lead": {"name": "Jo", "email": "jo@example.com"}})
    with caplog.at_level(logging.WARNING, logger="actiongate.conversations"):
        written = await store.update("c-4", "support", change, seen)
    assert vanished.await_count == 5  # bounded: then the last-resort write, not an error
    assert "kept vanishing" in caplog.text and "jo@example.com" not in caplog.text
    expected = {"lead": {"name": "Jo", "email": "jo@example.com"}, "channel": "web"}
    assert await store.load("c-4", "support") == expected == written.state


async def test_migration_adds_versions_and_keeps_existing_conversations(
    database: Database,
) -> None:
    engine = database.engine()
    now = datetime.now(UTC)
    before = [m for m in MIGRATIONS if m.__name__ < "m005"]

    def schema_of_migration_4(connection: Any) -> None:
        schema_migrations.create(connection)
        for fn in before:
            fn(connection)
            connection.execute(insert(schema_migrations).values(name=fn.__name__, applied_at=now))
        connection.execute(
            text(
                "INSERT INTO conversations (agent_id, id, state, created_at, updated_at)"
                " VALUES ('support', 'c-old', :state, :now, :now)"
            ),
            {"state": '{"lead": {"email": "kept@example.com"}}', "now": now},
        )

    async with engine.begin() as conn:
        await conn.run_sync(schema_of_migration_4)
    applied = await migrate(engine)
    assert applied == [m.__name__ for m in MIGRATIONS if m.__name__ >= "m005"]
    assert applied[0] == "m005_conversation_versions"
    async with engine.connect() as conn:
        columns = await conn.run_sync(lambda c: inspect(c).get_columns("conversations"))
    assert "version" in {column["name"] for column in columns}
    store = ConversationStore(engine)
    seen = await store.read("c-old", "support")
    assert seen.state == {"lead": {"email": "kept@example.com"}} and seen.version == 1
    change = StateChange.between(seen.state, {"lead": {**seen.state["lead"], "name": "Jo"}})
    written = await store.update("c-old", "support", change, seen)
    assert written.version == 2
    assert await store.load("c-old", "support") == {
        "lead": {"email": "kept@example.com", "name": "Jo"}
    }


# --- two replicas ---------------------------------------------------------------------------


def _completion(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": 0,
        "model": "m1",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _barrier_upstream(parties: int) -> web.Application:
    """An upstream whose first round of each request waits until ``parties`` have arrived.

    Every request has loaded the conversation before it asks the upstream, so past the barrier
    all of them start from the same stored state. Then each request's model fills in the form
    field its user message names (``f3``), and answers in text once the form's result is back.
    """
    barrier = asyncio.Barrier(parties)

    async def complete(request: web.Request) -> web.Response:
        body = await request.json()
        last = body["messages"][-1]
        if last["role"] == "tool":
            return web.json_response(_completion({"role": "assistant", "content": "ok"}, "stop"))
        async with asyncio.timeout(BARRIER_S):
            await barrier.wait()
        field = last["content"]
        call = {
            "id": f"call_{field}",
            "type": "function",
            "function": {"name": "profile", "arguments": json.dumps({field: f"value-{field}"})},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return web.json_response(_completion(message, "tool_calls"))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    return app


@asynccontextmanager
async def _serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/v1"
    finally:
        await runner.cleanup()


def _config(upstream: str, database: str) -> Any:
    fields = [{"name": f"f{i}", "maps_to": f"lead.f{i}"} for i in range(WRITERS)]
    return parse_config(
        {
            "upstream": {"base_url": upstream, "model": "m1"},
            "database": database,
            "agents": [{"id": "support", "ui": "text"}],
            "actions": [{"name": "Profile", "type": "form", "fields": fields}],
        },
        environ={},
    )


@asynccontextmanager
async def _replicas(upstream: str, database: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two gateway apps (each with its own engine and pool) on one database."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            app = create_app(_config(upstream, database))
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30)
            clients.append(await stack.enter_async_context(client))
        yield clients


async def _captures_on_two_replicas(database: str, engine: Callable[[], AsyncEngine]) -> None:
    async with (
        _serving(_barrier_upstream(WRITERS)) as upstream,
        _replicas(upstream, database) as replicas,
    ):
        lead = {"email": "jo@example.com"}
        store = ConversationStore(engine())
        await store.save("c-shared", "support", {"lead": lead})

        def ask(i: int) -> Awaitable[httpx.Response]:
            body = {
                "model": "support",
                "messages": [{"role": "user", "content": f"f{i}"}],
                "conversation": {"id": "c-shared"},
            }
            return replicas[i % 2].post("/v1/chat/completions", json=body)

        responses = await asyncio.gather(*(ask(i) for i in range(WRITERS)))
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "ok"
    stored = await store.read("c-shared", "support")
    captured = {f"f{i}": f"value-f{i}" for i in range(WRITERS)}
    assert stored.state["lead"] == lead | captured  # no request's capture was lost
    assert stored.version == 1 + WRITERS


async def test_two_replicas_on_one_sqlite_file_keep_every_captured_field(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    engines: list[AsyncEngine] = []

    def engine() -> AsyncEngine:
        engines.append(create_engine(database))
        return engines[-1]

    try:
        await _captures_on_two_replicas(database, engine)
    finally:
        for made in engines:
            await made.dispose()


@asynccontextmanager
async def _fresh_pg_database(pg_url: str) -> AsyncIterator[str]:
    """``CREATE DATABASE`` beside ``pg_url``'s (the replicas' config names a URL, not a schema)."""
    name = f"ag_conv_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.mark.postgres
async def test_two_replicas_on_postgresql_keep_every_captured_field(pg_url: str) -> None:
    async with _fresh_pg_database(pg_url) as database:
        engines: list[AsyncEngine] = []

        def engine() -> AsyncEngine:
            engines.append(create_engine(database))
            return engines[-1]

        try:
            await _captures_on_two_replicas(database, engine)
        finally:
            for made in engines:
                await made.dispose()
