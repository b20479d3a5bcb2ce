"""Stored Responses API answers, so ``previous_response_id`` can continue them on any replica.

A stored response keeps the conversation it belongs to and every message of that conversation up
to and including the response (the neutral Chat Completions form the tool loop speaks, the
gateway's own tool calls and results included). Like conversations, a response belongs to its
agent: rows are keyed by ``(agent_id, id)``, so another agent's response id is unknown here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.stores.db import stored_responses

__all__ = ["ResponseStore", "StoredResponse"]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What a later request needs of an earlier response."""

    conversation_id: str
    messages: list[dict[str, Any]]


class ResponseStore:
    """Save and load stored responses."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def load(self, response_id: str, agent_id: str) -> StoredResponse | None:
        """The response ``agent_id`` stored under this id, or None."""
        table = stored_responses.c
        query = select(table.conversation_id, table["items"]).where(
            table.agent_id == agent_id, table.id == response_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        messages = orjson.loads(row[1])
        return StoredResponse(row[0], messages if isinstance(messages, list) else [])

    async def save(
        self, response_id: str, agent_id: str, conversation_id: str, messages: list[dict[str, Any]]
    ) -> None:
        """Store a response (ids are fresh, so this only ever inserts)."""
        row = {
            "agent_id": agent_id,
            "id": response_id,
            "conversation_id": conversation_id,
            "items": orjson.dumps(messages).decode(),
            "created_at": datetime.now(UTC),
        }
        async with self._engine.begin() as conn:
            await conn.execute(insert(stored_responses), [row])
