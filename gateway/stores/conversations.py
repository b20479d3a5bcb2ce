"""Per-conversation state in the database, shared by every replica.

The state is a small JSON object: captured ``lead`` fields, the client's ``user_id`` and
``channel``, the gateway's pending forms/buttons/confirmations (``pending``, by tool call id, so
only calls the model really made can be answered), and results of gateway-side calls that went
back to the client next to a client tool call (``results``, used to repair a history that lacks
them).

A conversation belongs to its agent: rows are keyed by ``(agent_id, id)``, so the same
``conversation.id`` sent to two agents names two conversations and neither sees the other's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.stores.db import conversations, upsert_statement

__all__ = ["ConversationStore"]


class ConversationStore:
    """Load and save conversation state."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._upsert = upsert_statement(conversations, engine.dialect)

    async def load(self, conversation_id: str, agent_id: str) -> dict[str, Any] | None:
        """The state ``agent_id`` stored for this conversation, or None if it saved none."""
        query = select(conversations.c.state).where(
            conversations.c.agent_id == agent_id, conversations.c.id == conversation_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        state = orjson.loads(row[0])
        return state if isinstance(state, dict) else {}

    async def save(self, conversation_id: str, agent_id: str, state: dict[str, Any]) -> None:
        """Create or replace the agent's state for this conversation (last write wins)."""
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            await conn.execute(
                self._upsert,
                [
                    {
                        "id": conversation_id,
                        "agent_id": agent_id,
                        "state": orjson.dumps(state).decode(),
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            )
