"""Results of actions' health checks, shared by every replica and kept apart from the log.

Each action keeps its newest :data:`KEEP_RESULTS` results (older ones are pruned whenever one is
added). A scheduled check is first *claimed*: :meth:`HealthStore.claim_due` inserts a row
without an outcome (``ok`` NULL) for every check that is due, in one write transaction that only
one replica holds at a time — a transaction-level advisory lock on PostgreSQL (a replica that
does not get it skips the tick), ``BEGIN IMMEDIATE`` on SQLite. Whether a check is due is read
from the newest row of the table itself, so replicas together run each check once per
interval. :meth:`HealthStore.complete` fills the claimed row in once the check has run. Rows
without an outcome are never shown; one left behind by a replica that stopped mid-check still
marks its interval as run.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.stores.db import health_results
from gateway.stores.engines import for_writes

__all__ = ["KEEP_RESULTS", "HealthResult", "HealthStore"]

KEEP_RESULTS = 100
"""Results kept per action; older ones are pruned."""

_LOCK_KEY = zlib.crc32(b"actiongate.health") & 0x7FFFFFFF
_table = health_results


@dataclass(frozen=True, slots=True)
class HealthResult:
    """The outcome of one health check."""

    time: datetime
    """When the check started (UTC)."""
    ok: bool
    status_code: int | None
    """The API's status; None when nothing was sent (a dry check) or nothing answered."""
    duration_ms: float
    error: str | None
    """Why the check failed (redacted), or None."""
    dry: bool
    """The request was rendered, not sent."""

    def to_dict(self) -> dict[str, Any]:
        """The result as the admin API returns it."""
        return {
            "time": self.time.isoformat(),
            "ok": self.ok,
            "status_code": self.status_code,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "dry": self.dry,
        }


def _result(row: Row[Any]) -> HealthResult:
    return HealthResult(
        time=row.time,
        ok=bool(row.ok),
        status_code=row.status_code,
        duration_ms=float(row.duration_ms or 0.0),
        error=row.error,
        dry=bool(row.dry),
    )


def _values(result: HealthResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "status_code": result.status_code,
        "duration_ms": result.duration_ms,
        "error": result.error,
        "dry": result.dry,
    }


class HealthStore:
    """Claim, record and read health check results."""

    def __init__(self, engine: AsyncEngine, *, keep: int = KEEP_RESULTS) -> None:
        self._engine = engine
        self.keep = keep

    async def claim_due(
        self, intervals: Mapping[str, float], now: datetime
    ) -> dict[str, int] | None:
        """Claim every check whose newest result is older than its interval.

        Args:
            intervals: Seconds between checks, by tool name.
            now: The current time (UTC).

        Returns:
            The claimed row's id by tool name (empty when nothing is due), or None when another
            replica holds the schedule right now.
        """
        if not intervals:
            return {}
        async with for_writes(self._engine).begin() as conn:
            if conn.dialect.name == "postgresql":
                got = await conn.scalar(
                    text("SELECT pg_try_advisory_xact_lock(:key, hashtext(current_schema()))"),
                    {"key": _LOCK_KEY},
                )
                if not got:
                    return None
            newest = select(_table.c.tool_name, func.max(_table.c.time).label("time")).where(
                _table.c.tool_name.in_(list(intervals))
            )
            last = {r.tool_name: r.time for r in await conn.execute(newest.group_by("tool_name"))}
            claimed: dict[str, int] = {}
            for tool, every in intervals.items():
                ran = last.get(tool)
                if ran is not None and (now - ran).total_seconds() < every:
                    continue
                row = {"tool_name": tool, "time": now, "dry": False}
                inserted = await conn.scalar(insert(_table).values(**row).returning(_table.c.id))
                claimed[tool] = int(inserted)
                await self._prune(conn, tool)
            return claimed

    async def complete(self, claim_id: int, result: HealthResult) -> None:
        """Record the outcome of a claimed check."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(_table).where(_table.c.id == claim_id).values(**_values(result))
            )

    async def add(self, tool_name: str, result: HealthResult) -> None:
        """Record a check run outside the schedule (the admin API's "run now")."""
        async with self._engine.begin() as conn:
            row = {"tool_name": tool_name, "time": result.time, **_values(result)}
            await conn.execute(insert(_table).values(**row))
            await self._prune(conn, tool_name)

    async def _prune(self, conn: AsyncConnection, tool_name: str) -> None:
        kept = (
            select(_table.c.id)
            .where(_table.c.tool_name == tool_name)
            .order_by(_table.c.time.desc(), _table.c.id.desc())
            .limit(self.keep)
        )
        await conn.execute(
            delete(_table).where(_table.c.tool_name == tool_name, _table.c.id.not_in(kept))
        )

    async def history(self, tool_name: str, limit: int | None = None) -> list[HealthResult]:
        """The action's finished results, newest first."""
        query = (
            select(_table)
            .where(_table.c.tool_name == tool_name, _table.c.ok.is_not(None))
            .order_by(_table.c.time.desc(), _table.c.id.desc())
            .limit(limit or self.keep)
        )
        async with self._engine.connect() as conn:
            return [_result(row) for row in await conn.execute(query)]

    async def latest_by_tool(self) -> dict[str, HealthResult]:
        """Every action's newest finished result, by tool name."""
        newest = (
            select(func.max(_table.c.id))
            .where(_table.c.ok.is_not(None))
            .group_by(_table.c.tool_name)
        )
        query = select(_table).where(_table.c.id.in_(newest))
        async with self._engine.connect() as conn:
            return {row.tool_name: _result(row) for row in await conn.execute(query)}
