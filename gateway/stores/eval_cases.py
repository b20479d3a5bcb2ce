"""Each action's guardrail check cases, stored as one JSON list per action.

The cases are data for :mod:`gateway.evaluation`: this store keeps them as the admin service
hands them over (already checked) and gives them back; it knows nothing of their fields.
Every replica reads the same rows, so a case saved through one is run by any other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.stores.db import eval_cases
from gateway.stores.engines import upsert_statement

__all__ = ["EvalCaseStore"]


class EvalCaseStore:
    """Rows of the ``eval_cases`` table: tool name -> its list of cases."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._upsert = upsert_statement(eval_cases, engine.dialect)

    async def get(self, tool_name: str) -> list[dict[str, Any]]:
        """The action's cases, in the order they were saved (empty when it has none)."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                select(eval_cases.c.cases).where(eval_cases.c.tool_name == tool_name)
            )
        cases = orjson.loads(found) if found else []
        return [c for c in cases if isinstance(c, dict)] if isinstance(cases, list) else []

    async def put(self, tool_name: str, cases: list[dict[str, Any]]) -> None:
        """Replace the action's cases (an empty list removes the row)."""
        if not cases:
            await self.forget(tool_name)
            return
        row = {
            "tool_name": tool_name,
            "cases": orjson.dumps(cases).decode(),
            "updated_at": datetime.now(UTC),
        }
        async with self._engine.begin() as conn:
            await conn.execute(self._upsert, [row])

    async def forget(self, tool_name: str) -> None:
        """Drop the action's cases (the action was deleted)."""
        async with self._engine.begin() as conn:
            await conn.execute(delete(eval_cases).where(eval_cases.c.tool_name == tool_name))
