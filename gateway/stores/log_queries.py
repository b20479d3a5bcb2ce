"""Reading the execution log by filter: one page at a time, or every matching record in pages.

:class:`LogFilter` is every filter the Logs page and ``GET /api/logs`` offer: exact action,
agent, conversation and outcome, and a time range (``since`` inclusive, ``until`` exclusive, so
consecutive ranges never count a record twice). Pages are newest first and keyset-paged (the
cursor is a record's timestamp and id; :meth:`~gateway.stores.logs.LogStore.query` is this with
exact filters only); each filter index ends in ``(timestamp, id)``, so a page stays one index
range scan whatever the filter.

:func:`iter_records` walks every matching record page by page, each page its own short query,
so an export of a large log never holds a connection (or the whole result) for its duration.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.stores.db import UTCDateTime, executions
from gateway.stores.log_records import ExecutionRecord, Outcome, isoformat

__all__ = [
    "EXPORT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "LogFilter",
    "get_record",
    "iter_records",
    "query_page",
]

MAX_PAGE_SIZE = 1000
"""The largest page a query returns; a larger ``limit`` is capped."""
EXPORT_PAGE_SIZE = 500
"""Records read per query by :func:`iter_records`."""


def _encode_cursor(record: ExecutionRecord) -> str:
    raw = f"{isoformat(record.timestamp)}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, record_id = raw.partition("|")
        moment = datetime.fromisoformat(stamp)
    except ValueError as e:  # also binascii.Error and UnicodeDecodeError
        raise ValueError("invalid cursor") from e
    if not record_id or moment.tzinfo is None:
        raise ValueError("invalid cursor")
    return moment, record_id


@dataclass(frozen=True, slots=True, kw_only=True)
class LogFilter:
    """Which records to read; a field left None does not filter."""

    action: str | None = None
    """Only this tool name."""
    agent: str | None = None
    """Only this agent id."""
    conversation_id: str | None = None
    """Only this conversation."""
    outcome: Outcome | None = None
    """Only this outcome."""
    since: datetime | None = None
    """Only records at or after this moment (aware; a naive value is taken as UTC)."""
    until: datetime | None = None
    """Only records strictly before this moment (aware; a naive value is taken as UTC)."""

    def apply(self, statement: Select[Any]) -> Select[Any]:
        """``statement`` restricted to the records this filter selects."""
        table = executions
        exact = (
            (table.c.action, self.action),
            (table.c.agent_id, self.agent),
            (table.c.conversation_id, self.conversation_id),
            (table.c.outcome, self.outcome),
        )
        for column, value in exact:
            if value is not None:
                statement = statement.where(column == value)
        # Bound through UTCDateTime, so SQLite compares its stored UTC text like for like.
        if self.since is not None:
            statement = statement.where(table.c.timestamp >= literal(self.since, UTCDateTime()))
        if self.until is not None:
            statement = statement.where(table.c.timestamp < literal(self.until, UTCDateTime()))
        return statement


async def query_page(
    engine: AsyncEngine, where: LogFilter, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[ExecutionRecord], str | None]:
    """One page of the records ``where`` selects, newest first.

    Args:
        engine: The (migrated) database holding the ``executions`` table.
        where: The filter.
        limit: Page size, clamped to 1..:data:`MAX_PAGE_SIZE`.
        cursor: ``next_cursor`` of the previous page.

    Returns:
        The page and the cursor of the next one (None on the last page).

    Raises:
        ValueError: If ``cursor`` is not one a log query returned.
    """
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    table = executions
    statement = where.apply(select(table))
    if cursor is not None:
        moment, last_id = _decode_cursor(cursor)
        after = tuple_(literal(moment, UTCDateTime()), literal(last_id, String()))
        statement = statement.where(tuple_(table.c.timestamp, table.c.id) < after)
    statement = statement.order_by(table.c.timestamp.desc(), table.c.id.desc())
    async with engine.connect() as connection:
        result = await connection.execute(statement.limit(limit + 1))
        rows = result.mappings().all()
    records = [ExecutionRecord.from_row(row) for row in rows[:limit]]
    return records, _encode_cursor(records[-1]) if len(rows) > limit else None


async def iter_records(
    engine: AsyncEngine, where: LogFilter, *, page_size: int = EXPORT_PAGE_SIZE
) -> AsyncIterator[ExecutionRecord]:
    """Every record ``where`` selects, newest first, read ``page_size`` at a time.

    Keyset paging never yields a record twice, even while new records arrive; one stored
    during the walk is included only if it sorts below the page being read.
    """
    cursor: str | None = None
    while True:
        records, cursor = await query_page(engine, where, limit=page_size, cursor=cursor)
        for record in records:
            yield record
        if cursor is None:
            return


async def get_record(engine: AsyncEngine, record_id: str) -> ExecutionRecord | None:
    """The stored record with this id, or None."""
    async with engine.connect() as connection:
        result = await connection.execute(select(executions).where(executions.c.id == record_id))
        row = result.mappings().first()
    return None if row is None else ExecutionRecord.from_row(row)
