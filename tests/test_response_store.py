"""Stored responses on SQLite and PostgreSQL: written behind the answer, read by any replica."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.stores.db import migrate, stored_responses
from gateway.stores.responses import MISS_RETRY_S, ResponseStore
from tests.conftest import Database

MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "Where is order A-12345?"},
    {"role": "assistant", "content": "It shipped."},
]


async def _rows(database: Database) -> int:
    engine = database.engine()
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(stored_responses))).scalar_one()
        )


async def test_a_saved_response_is_read_at_once_and_by_another_replica(database: Database) -> None:
    engine = database.engine()
    await migrate(engine)
    first, other = ResponseStore(engine), ResponseStore(database.engine())
    await first.save("resp_1", "support", "conv-1", MESSAGES)
    mine = await first.load("resp_1", "support")  # its own queued write, no database trip
    assert mine is not None and mine.conversation_id == "conv-1" and mine.messages == MESSAGES
    await first.close()
    assert await _rows(database) == 1
    theirs = await other.load("resp_1", "support")
    assert theirs is not None and theirs.messages == MESSAGES
    assert await other.load("resp_1", "another-agent") is None  # responses belong to an agent


async def test_a_miss_looks_again_for_a_write_still_on_its_way(database: Database) -> None:
    engine = database.engine()
    await migrate(engine)
    writer, reader = ResponseStore(engine), ResponseStore(database.engine())
    looking = asyncio.create_task(reader.load("resp_late", "support"))
    await asyncio.sleep(MISS_RETRY_S / 4)  # the first look has missed
    await writer.save("resp_late", "support", "conv-2", MESSAGES)
    await writer.close()
    found = await looking
    assert found is not None and found.conversation_id == "conv-2"


async def test_the_stored_conversation_is_a_snapshot(database: Database) -> None:
    engine = database.engine()
    await migrate(engine)
    store = ResponseStore(engine)
    messages = [dict(m) for m in MESSAGES]
    await store.save("resp_s", "support", "c", messages)
    messages[0]["content"] = "changed later"
    loaded = await store.load("resp_s", "support")
    assert loaded is not None and loaded.messages == MESSAGES
    loaded.messages.append({"role": "user", "content": "a continuation's own list"})
    again = await store.load("resp_s", "support")
    assert again is not None and again.messages == MESSAGES
    await store.close()


async def test_a_failed_write_is_logged_and_the_store_keeps_working(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    engine = database.engine()
    await migrate(engine)
    store = ResponseStore(engine)
    await store.save("resp_d", "support", "c", MESSAGES)
    await store.close()
    with caplog.at_level(logging.ERROR, logger="actiongate.responses"):
        await store.save("resp_d", "support", "c", MESSAGES)  # the same key: the insert fails
        await store.close()
    assert "could not store 1 response(s): resp_d" in caplog.text
    await store.save("resp_e", "support", "c", MESSAGES)
    await store.close()
    assert await _rows(database) == 2
