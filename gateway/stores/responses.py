"""Stored Responses API answers, so ``previous_response_id`` can continue them on any replica.

A stored response keeps the conversation it belongs to and every message of that conversation up
to and including the response (the neutral Chat Completions form the tool loop speaks, the
gateway's own tool calls and results included). Like conversations, a response belongs to its
agent: rows are keyed by ``(agent_id, id)``, so another agent's response id is unknown here.

Writes are behind the answer, as the execution log's are: :meth:`ResponseStore.save` queues
the row and returns, so a database round trip (about 1.5 ms on SQLite) is not added to every
response, and one writer task inserts whatever has queued in one transaction. The same process
reads its own queued rows at once; another replica that does not find an id yet looks again
once, :data:`MISS_RETRY_S` later, before answering "not found". A batch the database refuses
is logged and dropped (the answers have left; a continuation then gets the 404).
:meth:`ResponseStore.close` waits for every queued row (the lifespan calls it before the
database closes).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.stores.db import stored_responses

__all__ = ["MISS_RETRY_S", "ResponseStore", "StoredResponse"]

MISS_RETRY_S = 0.2
"""How long a miss waits before the second look (a write queued on another replica)."""
MAX_QUEUED = 1000
"""Rows queued beyond this are inserted by the request that makes them (backpressure)."""

logger = logging.getLogger("actiongate.responses")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What a later request needs of an earlier response."""

    conversation_id: str
    messages: list[dict[str, Any]]


class ResponseStore:
    """Save and load stored responses."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queued: dict[tuple[str, str], tuple[str, str]] = {}  # -> conversation, items
        self._rows: list[dict[str, Any]] = []
        self._writer: asyncio.Task[None] | None = None

    async def load(self, response_id: str, agent_id: str) -> StoredResponse | None:
        """The response ``agent_id`` stored under this id, or None."""
        found = self._from_queue(response_id, agent_id) or await self._select(response_id, agent_id)
        if found is None:
            await asyncio.sleep(MISS_RETRY_S)  # another replica may still be writing it
            found = self._from_queue(response_id, agent_id) or await self._select(
                response_id, agent_id
            )
        return found

    def _from_queue(self, response_id: str, agent_id: str) -> StoredResponse | None:
        queued = self._queued.get((agent_id, response_id))
        return None if queued is None else _parsed(*queued)

    async def _select(self, response_id: str, agent_id: str) -> StoredResponse | None:
        table = stored_responses.c
        query = select(table.conversation_id, table["items"]).where(
            table.agent_id == agent_id, table.id == response_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _parsed(row[0], row[1])

    async def save(
        self, response_id: str, agent_id: str, conversation_id: str, messages: list[dict[str, Any]]
    ) -> None:
        """Queue a response for storing (ids are fresh, so this only ever inserts)."""
        items = orjson.dumps(messages).decode()  # a snapshot: later edits do not reach it
        row = {
            "agent_id": agent_id,
            "id": response_id,
            "conversation_id": conversation_id,
            "items": items,
            "created_at": datetime.now(UTC),
        }
        if len(self._rows) >= MAX_QUEUED:
            await self._insert([row])
            return
        self._queued[(agent_id, response_id)] = (conversation_id, items)
        self._rows.append(row)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self._rows:
            batch, self._rows = self._rows, []
            await self._insert(batch)
            for row in batch:
                self._queued.pop((row["agent_id"], row["id"]), None)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(stored_responses), rows)
        except Exception:  # the answers have left; say so, keep serving
            ids = ", ".join(row["id"] for row in rows[:5])
            logger.exception("could not store %d response(s): %s", len(rows), ids)

    async def close(self) -> None:
        """Wait for every queued row."""
        while self._writer is not None and not self._writer.done():
            await self._writer


def _parsed(conversation_id: str, items: str) -> StoredResponse:
    messages = orjson.loads(items)
    return StoredResponse(conversation_id, messages if isinstance(messages, list) else [])
