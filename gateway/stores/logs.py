"""The execution log: one record per execution, written in the background.

The record's fields are listed in the README's "Execution engine" section.

The request path only calls :meth:`LogStore.submit`, which never waits for the database. A
single writer task drains the buffer in batches (one transaction each); when the database is
unreachable it keeps the records and retries with exponential backoff. The buffer is bounded:
on overflow the oldest waiting records are dropped, counted and logged, never silently.
Submitting a record again with the same ``id`` updates it (an upsert), e.g. to set ``injected``.
Each batch also adds its records to their hours in ``execution_hours`` (taking a stored
version off first), in the same transaction (:mod:`gateway.stores.hourly_stats`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, get_args

import orjson
from sqlalchemy import Dialect, RowMapping, String, Table, literal, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Insert

from gateway.redaction import Redactor
from gateway.stores.db import (
    UTCDateTime,
    execution_hours,
    executions,
    for_writes,
    upsert_statement,
)
from gateway.stores.hourly_stats import VALUE_COLUMNS, contributions
from gateway.telemetry import metrics

__all__ = [
    "MAX_PAGE_SIZE",
    "OUTCOMES",
    "ExecutionRecord",
    "LogStore",
    "LogStoreStats",
    "Outcome",
    "new_execution_id",
    "new_record",
]

logger = logging.getLogger("actiongate.logs")

# fmt: off
Outcome = Literal["success", "http_error", "timeout", "connect_error", "blocked", "rejected",
                  "pending_confirmation", "declined"]
# fmt: on
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
MAX_PAGE_SIZE = 1000


class _IdClock:
    """Issues UUIDv7-layout ids as 32 hex digits: sortable by time, monotonic per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = self._counter = 0

    def next(self) -> str:
        ms = int(datetime.now(UTC).timestamp() * 1000)
        with self._lock:
            # The 12-bit counter orders ids of one millisecond; its random start leaves room
            # for ~2000 ids before borrowing the next millisecond.
            if ms > self._last_ms:
                counter = secrets.randbelow(0x800)
            elif self._counter < 0xFFF:
                ms, counter = self._last_ms, self._counter + 1
            else:
                ms, counter = self._last_ms + 1, secrets.randbelow(0x800)
            self._last_ms, self._counter = ms, counter
        value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | secrets.randbits(62)
        return f"{value:032x}"


new_execution_id = _IdClock().next
"""A new record id (32 hex digits, UUIDv7 layout); later ids sort after earlier ones."""


def _isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json_default(value: Any) -> Any:
    # Logging must not fail on an odd value: bytes become text, anything else its str().
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, kw_only=True)
class ExecutionRecord:
    """One execution, exactly the fields the README lists.

    ``id`` and ``timestamp`` fill themselves.
    """

    id: str = field(default_factory=new_execution_id)
    """Time-sortable id (see :func:`new_execution_id`)."""
    timestamp: datetime = field(default_factory=_now)
    """When the execution started, aware UTC."""
    agent_id: str | None = None
    """None for tests from the admin API or the CLI."""
    conversation_id: str | None = None
    action: str
    """The tool name the model (or test) asked for, even when no such action exists."""
    tool_call_id: str | None = None
    request: dict[str, Any]
    """``{method, url, headers, body}`` as sent (or as it would have been sent)."""
    response: dict[str, Any] | None = None
    """``{status_code, body, truncated}``, or None when nothing came back."""
    duration_ms: float = 0.0
    outcome: Outcome
    error: str | None = None
    injected: bool = False
    """Whether the result was given to the model."""
    injected_content: str | None = None
    """Exactly what the model was given."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record, as the logs API and ``logs --json`` print it."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["timestamp"] = _isoformat(self.timestamp)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecutionRecord:
        """Rebuild a record from :meth:`to_dict` output (e.g. a ``logs --json`` line)."""
        values = dict(data)
        stamp = values.pop("timestamp")
        stamp = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
        return cls(timestamp=stamp.astimezone(UTC), **values)

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any]) -> ExecutionRecord:
        """Rebuild a record from an ``executions`` row."""
        values = {f.name: row[f.name] for f in fields(cls)}
        values["request"] = orjson.loads(values["request"])
        if values["response"] is not None:
            values["response"] = orjson.loads(values["response"])
        values["injected"] = bool(values["injected"])
        return cls(**values)


new_record = ExecutionRecord
"""Factory: ``new_record(action=..., outcome=..., request=..., ...)`` stamps a fresh id and now."""


def _encode_cursor(record: ExecutionRecord) -> str:
    raw = f"{_isoformat(record.timestamp)}|{record.id}".encode()
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


class LogStoreStats(TypedDict):
    """Counters of a :class:`LogStore`."""

    queued: int
    """Records submitted and not yet stored."""
    written: int
    """Record writes stored (an upsert counts again)."""
    dropped: int
    """Records lost: buffer overflow, unstorable data, or submitted after close."""
    write_errors: int
    """Failed write attempts (each one retried, unless the data itself was refused)."""


@dataclass(slots=True)
class _Entry:
    seq: int  # submission order; flush() waits for every entry up to a given seq
    record: ExecutionRecord
    row: dict[str, Any] | None = field(default=None)


class LogStore:
    """Stores execution records through a background batch writer and answers log queries.

    Use from the event loop's thread. Typical life cycle::

        store = LogStore(engine, redactor)
        await store.start()
        store.submit(record)      # on the request path: never blocks
        await store.close()       # on shutdown: everything submitted is stored
    """

    def __init__(
        self,
        engine: AsyncEngine,
        redactor: Redactor | None = None,
        *,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        linger_s: float = 0.02,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
    ) -> None:
        """Create a store; call :meth:`start` (or use ``async with``) before relying on writes.

        Args:
            engine: The database, already migrated (:func:`gateway.stores.db.migrate`).
            redactor: Applied to every record before it is written; by default, redaction by
                name only (callers redact too, this is defence in depth).
            max_buffer: Records kept while the database is slow or down; beyond it the oldest
                waiting records are dropped.
            batch_size: Most records written in one transaction.
            retry_initial_s: First backoff after a failed write; doubles up to ``retry_max_s``.
            retry_max_s: Longest backoff between retries.
        """
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        self._engine = engine
        self._write_engine = for_writes(engine)
        self._upsert = upsert_statement(executions, engine.dialect)
        self._add_hours = _adding_upsert(execution_hours, engine.dialect)
        self._redactor = Redactor() if redactor is None else redactor
        self._max_buffer = max_buffer
        self._batch_size = max(1, min(batch_size, max_buffer))
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._pending: OrderedDict[str, _Entry] = OrderedDict()
        self._batch: list[_Entry] = []  # taken from _pending, being written
        self._seq = 0
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()
        self._linger_s = linger_s
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._written = self._dropped = self._write_errors = 0
        self._overflow_drops = 0  # in the current overflow episode, to rate-limit warnings

    async def __aenter__(self) -> LogStore:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- writing --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background writer (idempotent). Records submitted earlier are kept."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="actiongate-log-writer")

    def submit(self, record: ExecutionRecord) -> None:
        """Queue ``record`` for storage; returns at once.

        A record whose ``id`` was submitted before replaces it (in the buffer if still there,
        in the database otherwise).
        """
        if self._closed:
            self._drop(1)
            logger.error("execution %s submitted after the log store closed: not stored", record.id)
            return
        self._seq += 1
        waiting = self._pending.get(record.id)
        if waiting is not None:
            # Keep its place (and seq): whoever flushes for the old version gets the new one.
            waiting.record = record
        else:
            self._pending[record.id] = _Entry(self._seq, record)
            self._enforce_bound()
            metrics.log_buffer(len(self._pending) + len(self._batch))
        self._wakeup.set()

    def _drop(self, count: int) -> None:
        self._dropped += count
        metrics.log_dropped(count)

    async def flush(self) -> None:
        """Wait until every record submitted before this call is stored (or counted dropped).

        Raises:
            RuntimeError: If the writer was never started or has stopped.
        """
        target = self._seq
        if self._oldest_seq() > target:
            return
        if self._task is None or self._task.done():
            raise RuntimeError("the log store is not running; call start() first")
        done = asyncio.get_running_loop().create_future()
        self._waiters.append((target, done))
        self._urgent.set()
        await asyncio.wait({done, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            done.cancel()
            raise RuntimeError("the log writer stopped before the records were stored")

    async def close(self, timeout_s: float | None = 30.0) -> None:
        """Store everything submitted so far, then stop the writer.

        Args:
            timeout_s: Longest wait for a database that stays down; records still unstored
                afterwards are counted as dropped and logged as an error. None waits forever.
        """
        if self._closed:
            return
        self._closing = True
        self._urgent.set()
        if self._task is None and (self._pending or self._batch):
            await self.start()
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            except Exception:
                logger.exception("the log writer failed")
        lost = len(self._pending) + len(self._batch)
        if lost:
            self._drop(lost)
            logger.error("log store closed with %d execution records unstored", lost)
            self._pending.clear()
            self._batch.clear()
        self._closed = True
        self._resolve_waiters()

    def stats(self) -> LogStoreStats:
        """Current counters."""
        return LogStoreStats(
            queued=len(self._pending) + len(self._batch),
            written=self._written,
            dropped=self._dropped,
            write_errors=self._write_errors,
        )

    def _enforce_bound(self) -> None:
        # The batch being written is the oldest data, but it is already on its way; drop from
        # the records queued behind it.
        while len(self._pending) + len(self._batch) > self._max_buffer and self._pending:
            self._pending.popitem(last=False)
            self._drop(1)
            self._overflow_drops += 1
            if self._overflow_drops == 1 or self._overflow_drops % 1000 == 0:
                logger.warning(
                    "execution log buffer full (%d records, database slow or down): "
                    "dropped %d oldest records so far (%d in total)",
                    self._max_buffer,
                    self._overflow_drops,
                    self._dropped,
                )
        self._resolve_waiters()

    def _oldest_seq(self) -> int:
        # Both queues are in seq order, so their heads hold the oldest unstored submission.
        oldest = self._seq + 1
        if self._batch:
            oldest = self._batch[0].seq
        if self._pending:
            oldest = min(oldest, next(iter(self._pending.values())).seq)
        return oldest

    def _resolve_waiters(self) -> None:
        oldest = self._oldest_seq()
        still_waiting = []
        for target, done in self._waiters:
            if done.done():
                continue
            if oldest > target:
                done.set_result(None)
            else:
                still_waiting.append((target, done))
        self._waiters = still_waiting

    async def _run(self) -> None:
        delay = self._retry_initial_s
        while True:
            if not self._batch:
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._linger()
                await self._take_batch()
            try:
                await self._write_batch()
            except Exception as exc:
                self._write_errors += 1
                logger.warning(
                    "could not store %d execution records (%s); %d queued, retrying in %.2f s",
                    len(self._batch),
                    _describe(exc),
                    len(self._pending) + len(self._batch),
                    delay,
                )
                # Jitter keeps replicas that lost the same database from retrying in lockstep.
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311
                delay = min(delay * 2, self._retry_max_s)
            else:
                delay = self._retry_initial_s

    async def _linger(self) -> None:
        """Wait briefly for more records: an execution and its ``injected`` update, submitted
        a few milliseconds apart, then become one write. A flush or close skips the wait."""
        if self._linger_s <= 0 or self._closing or len(self._pending) >= self._batch_size:
            return
        if self._waiters:
            return
        self._urgent.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._urgent.wait(), self._linger_s)

    async def _take_batch(self) -> None:
        while self._pending and len(self._batch) < self._batch_size:
            if self._batch and len(self._batch) % 32 == 0:
                await asyncio.sleep(0)  # redaction costs CPU: let requests run in between
            _, entry = self._pending.popitem(last=False)
            try:
                entry.row = self._to_row(entry.record)
            except Exception:
                self._drop(1)
                logger.exception("execution %s cannot be stored; dropped", entry.record.id)
                continue
            self._batch.append(entry)
        self._resolve_waiters()

    async def _write_batch(self) -> None:
        try:
            await self._execute([entry.row for entry in self._batch if entry.row is not None])
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            # One bad record must not block the rest: store them one by one.
            while self._batch:
                await self._write_single(self._batch[0])
                self._batch.pop(0)
        else:
            self._written += len(self._batch)
            self._batch.clear()
        self._overflow_drops = 0
        metrics.log_buffer(len(self._pending) + len(self._batch))
        self._resolve_waiters()

    async def _write_single(self, entry: _Entry) -> None:
        try:
            await self._execute([entry.row] if entry.row is not None else [])
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            self._write_errors += 1
            self._drop(1)
            logger.error(
                "execution %s refused by the database (%s); dropped",
                entry.record.id,
                _describe(exc),
            )
        else:
            self._written += 1

    async def _execute(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            async with self._write_engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    # A prepared statement's generic plan, made while a new log was nearly
                    # empty, scans the whole table for the ids below until the first ANALYZE.
                    await connection.exec_driver_sql(_CUSTOM_PLANS)
                # The hours move with the records, in the same transaction: a record stored
                # again (its injected update) first takes its stored version off its hour.
                stored = await connection.execute(
                    select(*(executions.c[name] for name in _HOUR_FIELDS)).where(
                        executions.c.id.in_([row["id"] for row in rows])
                    )
                )
                changes = contributions(stored.mappings().all(), rows)
                if changes:
                    await connection.execute(self._add_hours, changes)
                await connection.execute(self._upsert, rows)

    def _to_row(self, record: ExecutionRecord) -> dict[str, Any]:
        redactor = self._redactor
        row = {f.name: getattr(record, f.name) for f in fields(record)}
        row["request"] = _dumps(redactor.redact_request(record.request))
        if record.response is not None:
            row["response"] = _dumps(redactor.redact_json(record.response))
        for name in ("error", "injected_content"):
            if row[name] is not None:
                row[name] = redactor.redact_text(str(row[name]))
        for name in (
            "action",
            "agent_id",
            "conversation_id",
            "tool_call_id",
            "error",
            "injected_content",
        ):
            # PostgreSQL text cannot hold NUL; a record must never be lost over one character.
            if isinstance(row[name], str) and "\x00" in row[name]:
                row[name] = row[name].replace("\x00", "\ufffd")
        row["duration_ms"], row["injected"] = float(record.duration_ms), bool(record.injected)
        return row

    # --- reading --------------------------------------------------------------------------

    async def query(
        self,
        *,
        action: str | None = None,
        agent: str | None = None,
        conversation_id: str | None = None,
        outcome: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[ExecutionRecord], str | None]:
        """Stored records, newest first, filtered by any combination of fields.

        Args:
            action: Only this tool name.
            agent: Only this agent id.
            conversation_id: Only this conversation.
            outcome: Only this outcome.
            limit: Page size, clamped to 1..:data:`MAX_PAGE_SIZE`.
            cursor: ``next_cursor`` of the previous page.

        Returns:
            The page and the cursor of the next one (None on the last page).

        Raises:
            ValueError: If ``cursor`` is not one this method returned.
        """
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        table = executions
        statement = select(table)
        filters = (
            (table.c.action, action),
            (table.c.agent_id, agent),
            (table.c.conversation_id, conversation_id),
            (table.c.outcome, outcome),
        )
        for column, value in filters:
            if value is not None:
                statement = statement.where(column == value)
        if cursor is not None:
            moment, last_id = _decode_cursor(cursor)
            # A row-value comparison is one range on the (…, timestamp, id) indexes.
            after = tuple_(literal(moment, UTCDateTime()), literal(last_id, String()))
            statement = statement.where(tuple_(table.c.timestamp, table.c.id) < after)
        statement = statement.order_by(table.c.timestamp.desc(), table.c.id.desc())
        async with self._engine.connect() as connection:
            result = await connection.execute(statement.limit(limit + 1))
            rows = result.mappings().all()
        records = [ExecutionRecord.from_row(row) for row in rows[:limit]]
        return records, _encode_cursor(records[-1]) if len(rows) > limit else None

    async def get(self, record_id: str) -> ExecutionRecord | None:
        """The stored record with this id, or None."""
        async with self._engine.connect() as connection:
            result = await connection.execute(
                select(executions).where(executions.c.id == record_id)
            )
            row = result.mappings().first()
        return None if row is None else ExecutionRecord.from_row(row)


_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"
_HOUR_FIELDS = ("timestamp", "agent_id", "action", "outcome", "error", "duration_ms", "injected")
"""What :func:`~gateway.stores.hourly_stats.contributions` reads of a stored record."""


def _adding_upsert(table: Table, dialect: Dialect) -> Insert:
    """``INSERT .. ON CONFLICT (key) DO UPDATE`` adding each counter to the stored one."""
    make_insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    statement = make_insert(table)
    keys = [column.name for column in table.primary_key]
    added = {name: table.c[name] + statement.excluded[name] for name in VALUE_COLUMNS}
    return statement.on_conflict_do_update(index_elements=keys, set_=added)


def _is_data_error(exc: Exception) -> bool:
    """Whether the database refused the data itself (retrying would fail the same way)."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    # A StatementError that is not a driver error failed while converting parameters.
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _describe(exc: BaseException) -> str:
    """A short, one-line reason (driver errors carry the SQL, which does not help here)."""
    reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(reason).split()) or type(reason).__name__
    return f"{type(reason).__name__}: {text[:300]}"
