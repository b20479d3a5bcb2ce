"""Definitions changed through the admin API, stored in the database and shared by replicas.

The config file is the starting point; what the admin API creates, replaces or deletes is stored
here and wins over the file for that tool name or agent id (a deletion is stored as a
tombstone, so a file-defined action stays deleted). Every replica reads the same rows, and
:meth:`DefinitionStore.fingerprint` tells a replica cheaply whether anything changed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.stores.db import actions as actions_table
from gateway.stores.db import agents as agents_table
from gateway.stores.db import secrets as secrets_table
from gateway.stores.engines import upsert_statement

__all__ = ["TOMBSTONE", "DefinitionStore"]

TOMBSTONE: dict[str, Any] = {"__deleted__": True}


class DefinitionStore:
    """Rows of the ``actions`` and ``agents`` tables as JSON definitions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._upsert_action = upsert_statement(actions_table, engine.dialect)
        self._upsert_agent = upsert_statement(agents_table, engine.dialect)

    async def load(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Every stored action (by tool name) and agent (by id), tombstones included."""
        async with self._engine.connect() as conn:
            acts = (
                await conn.execute(select(actions_table.c.tool_name, actions_table.c.definition))
            ).all()
            ags = (await conn.execute(select(agents_table.c.id, agents_table.c.definition))).all()
        return (
            {name: orjson.loads(d) for name, d in acts},
            {aid: orjson.loads(d) for aid, d in ags},
        )

    async def fingerprint(self) -> str:
        """A digest of every stored row: any write by any replica changes it, clocks aside."""
        digest = hashlib.sha256()
        async with self._engine.connect() as conn:
            for key, content in (
                (actions_table.c.tool_name, actions_table.c.definition),
                (agents_table.c.id, agents_table.c.definition),
                (secrets_table.c.name, secrets_table.c.value),  # set through /api/secrets
            ):
                rows = await conn.execute(select(key, content).order_by(key))
                for name, definition in rows:
                    digest.update(f"{name}\0{definition}\0".encode())
                digest.update(b"\1")
        return digest.hexdigest()

    async def put_action(self, tool_name: str, definition: dict[str, Any]) -> None:
        """Store (or tombstone) an action."""
        row = {
            "tool_name": tool_name,
            "definition": orjson.dumps(definition).decode(),
            "updated_at": datetime.now(UTC),
        }
        async with self._engine.begin() as conn:
            await conn.execute(self._upsert_action, [row])

    async def put_agent(self, agent_id: str, definition: dict[str, Any]) -> None:
        """Store (or tombstone) an agent."""
        row = {
            "id": agent_id,
            "definition": orjson.dumps(definition).decode(),
            "updated_at": datetime.now(UTC),
        }
        async with self._engine.begin() as conn:
            await conn.execute(self._upsert_agent, [row])

    async def forget_action(self, tool_name: str) -> None:
        """Drop a stored action row entirely (the file's definition applies again)."""
        async with self._engine.begin() as conn:
            await conn.execute(delete(actions_table).where(actions_table.c.tool_name == tool_name))
