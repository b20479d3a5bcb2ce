"""Writing a batch of execution rows: one transaction, the hourly sums moved with it.

:class:`BatchWriter` turns a record into the upsert's parameters (redacted, then converted as
SQLAlchemy would) and writes a batch of them. On SQLite the compiled upsert goes to the driver
as multi-row statements: SQLAlchemy's per-row parameter processing cost more than SQLite's own
insert, and the driver's thread takes the GIL back after every step, which waits out a busy
event loop's switch interval (5 ms) each time. PostgreSQL keeps SQLAlchemy's ``executemany``.

In the same transaction each record's counts move into its hour in ``execution_hours``
(:mod:`gateway.stores.hourly_stats`): a record stored again (its ``injected`` update) first
takes its stored version off its hour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Dialect, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Insert

from gateway.redaction import Redactor
from gateway.stores.db import execution_hours, executions
from gateway.stores.engines import for_writes, upsert_statement
from gateway.stores.hourly_stats import contributions
from gateway.stores.log_records import COLUMNS, ExecutionRecord, redacted_row

__all__ = ["ROWS_PER_STATEMENT", "BatchWriter", "chunk_sizes"]

T = TypeVar("T")

ROWS_PER_STATEMENT = 250
"""Rows per SQLite statement: 3,250 parameters, under SQLite's limit (32,766 since 3.32)."""


def chunk_sizes(count: int) -> list[int]:
    """Rows per statement for ``count`` rows: full statements, the rest in powers of two.

    The driver keeps each distinct statement it prepared (128 per connection), at about 2.5 KB
    per row slot of a multi-row upsert: one statement per batch size came to ~40 MB of a busy
    gateway's memory. These sizes make at most nine distinct texts (~1.3 MB).
    """
    sizes = [ROWS_PER_STATEMENT] * (count // ROWS_PER_STATEMENT)
    rest = count % ROWS_PER_STATEMENT
    sizes += [1 << bit for bit in range(rest.bit_length() - 1, -1, -1) if rest >> bit & 1]
    return sizes


def _chunked(items: list[T]) -> Iterator[list[T]]:
    """``items`` in consecutive pieces of :func:`chunk_sizes`."""
    start = 0
    for size in chunk_sizes(len(items)):
        yield items[start : start + size]
        start += size


_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"
_HOUR_FIELDS = ("timestamp", "agent_id", "action", "outcome", "error", "duration_ms", "injected")
"""What :func:`~gateway.stores.hourly_stats.contributions` reads of a record."""
_ID = COLUMNS.index("id")
_HOUR_INDEXES = tuple((name, COLUMNS.index(name)) for name in _HOUR_FIELDS)


class BatchWriter:
    """Rows of execution records, and writing a batch of them in one transaction."""

    def __init__(self, engine: AsyncEngine, redactor: Redactor) -> None:
        self._engine = for_writes(engine)
        self._redactor = redactor
        dialect = engine.dialect
        self._upsert = upsert_statement(executions, dialect)
        self._add_hours = upsert_statement(execution_hours, dialect, adding=True)
        self._driver_sql = _driver_upsert(dialect, self._upsert)
        self._sql_by_rows: dict[int, str] = {}
        self._stored_hours = select(*(executions.c[name] for name in _HOUR_FIELDS))
        # SQLAlchemy's own conversions (e.g. the timestamp's text form on SQLite), done in
        # row() so that the driver gets final values.
        self._bind: list[tuple[int, Callable[[Any], Any]]] = []
        if self._driver_sql is not None:
            for index, column in enumerate(executions.columns):
                process = column.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    self._bind.append((index, process))

    def redacted(self, record: ExecutionRecord) -> list[Any]:
        """The record's column values in :data:`COLUMNS` order, redacted, not yet converted."""
        return redacted_row(record, self._redactor)

    def bound(self, row: list[Any]) -> tuple[Any, ...]:
        """A :meth:`redacted` row as the driver takes it (converted in place)."""
        for index, process in self._bind:
            row[index] = process(row[index])
        return tuple(row)

    def row(self, record: ExecutionRecord) -> tuple[Any, ...]:
        """The record as the upsert's parameters, in :data:`COLUMNS` order, redacted."""
        return self.bound(self.redacted(record))

    async def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Store ``rows`` (from :meth:`row`, one per id) and their hours, in one transaction."""
        if not rows:
            return
        async with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # A prepared statement's generic plan, made while a new log was nearly empty,
                # scans the whole table for the ids below until the first ANALYZE.
                await connection.exec_driver_sql(_CUSTOM_PLANS)
            ids = [row[_ID] for row in rows]
            # One IN list per chunk on SQLite (each length is another prepared statement).
            stored: list[Any] = []
            for some in [ids] if self._driver_sql is None else _chunked(ids):
                found = await connection.execute(
                    self._stored_hours.where(executions.c.id.in_(some))
                )
                stored += found.mappings().all()
            changes = contributions(stored, [_hour_fields(r) for r in rows])
            if changes:
                await connection.execute(self._add_hours, changes)
            if self._driver_sql is None:
                await connection.execute(
                    self._upsert, [dict(zip(COLUMNS, r, strict=True)) for r in rows]
                )
                return
            for chunk in _chunked(rows):
                params = tuple(value for row in chunk for value in row)
                await connection.exec_driver_sql(self._many_rows_sql(len(chunk)), params)

    def _many_rows_sql(self, count: int) -> str:
        sql = self._sql_by_rows.get(count)
        if sql is None:
            assert self._driver_sql is not None
            head, _, tail = self._driver_sql.partition(" VALUES ")
            placeholders, _, rest = tail.partition(")")
            sql = f"{head} VALUES {','.join([placeholders + ')'] * count)}{rest}"
            self._sql_by_rows[count] = sql  # chunk_sizes: at most nine
        return sql


def _hour_fields(row: tuple[Any, ...]) -> dict[str, Any]:
    """What :func:`~gateway.stores.hourly_stats.contributions` reads of a row being written.

    On SQLite the row's values are already the driver's (the timestamp as SQLAlchemy's UTC
    text, ``injected`` as 0/1): the timestamp is read back into an aware datetime.
    """
    fields = {name: row[index] for name, index in _HOUR_INDEXES}
    stamp = fields["timestamp"]
    if isinstance(stamp, str):
        fields["timestamp"] = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
    return fields


def _driver_upsert(dialect: Dialect, statement: Insert) -> str | None:
    """The upsert as SQL text for positional parameters in :data:`COLUMNS` order, or None when
    the dialect's driver does not take ``?`` parameters (PostgreSQL keeps SQLAlchemy's path)."""
    if dialect.name != "sqlite":
        return None
    compiled = statement.compile(dialect=dialect)
    if compiled.positiontup != list(COLUMNS):
        return None
    return str(compiled)
