"""The execution log: one record per execution, written in the background.

The record's fields are listed in the README's "Execution engine" section
(:mod:`gateway.stores.log_records`).

The request path only calls :meth:`LogStore.submit`, which never waits for the database. A
single writer task drains the buffer in batches, one transaction each
(:mod:`gateway.stores.log_writes`: multi-row upserts on SQLite, the hourly sums moved with
them); when the database is unreachable it keeps the records and retries with exponential
backoff. The buffer is bounded: on overflow the oldest waiting records move, redacted, to the
spill file when the store has one (:mod:`gateway.stores.log_spill`; ``serve`` gives one to a
SQLite file database), which the writer stores from before anything newer, also after a
restart. Without a spill, or once the spill is full, they are dropped, counted and logged,
never silently. Submitting a record again with the same ``id`` updates it (an upsert), e.g. to
set ``injected``. Reading is :mod:`gateway.stores.log_queries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.redaction import Redactor
from gateway.stores.log_queries import MAX_PAGE_SIZE, LogFilter, get_record, query_page
from gateway.stores.log_records import (
    COLUMNS,
    OUTCOMES,
    TIMESTAMP,
    ExecutionRecord,
    Outcome,
    new_execution_id,
    new_record,
)
from gateway.stores.log_spill import DEFAULT_SPILL_MAX_BYTES, LogSpill
from gateway.stores.log_writes import BatchWriter
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
    spilled: int
    """Records waiting in the spill file (also after a restart), included in ``queued``."""


@dataclass(slots=True)
class _Entry:
    seq: int  # submission order; flush() waits for every entry up to a given seq
    record: ExecutionRecord | None  # None for a row read back from the spill file
    row: tuple[Any, ...] | None = field(default=None)

    @property
    def id(self) -> str:
        return self.record.id if self.record is not None else str(self.row[0] if self.row else "")


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
        spill_path: str | os.PathLike[str] | None = None,
        spill_max_bytes: int = DEFAULT_SPILL_MAX_BYTES,
        spill_slots: int = 1,
    ) -> None:
        """Create a store; call :meth:`start` (or use ``async with``) before relying on writes.

        Args:
            engine: The database, already migrated (:func:`gateway.stores.db.migrate`).
            redactor: Applied to every record before it is written; by default, redaction by
                name only (callers redact too, this is defence in depth).
            max_buffer: Records kept in memory while the database is slow or down; beyond it
                the oldest waiting records move to the spill file, or without one are dropped.
            batch_size: Most records written in one transaction.
            retry_initial_s: First backoff after a failed write; doubles up to ``retry_max_s``.
            retry_max_s: Longest backoff between retries.
            spill_path: The spill file (:mod:`gateway.stores.log_spill`); None for none.
            spill_max_bytes: The spill file's bound; beyond it records are dropped.
            spill_slots: Spill files to choose from, one per process sharing the database.
        """
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        self._engine = engine
        self._writer = BatchWriter(engine, Redactor() if redactor is None else redactor)
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
        self._spill = None
        if spill_path is not None:
            self._spill = LogSpill(spill_path, spill_max_bytes, slots=spill_slots)
        self._spill_chunk = max(1, min(256, max_buffer // 4))  # records moved to it at once
        # (records, first seq) per append, oldest first: flush() waits for spilled records too.
        self._spill_seqs: deque[list[int]] = deque()
        self._batch_spilled = 0  # rows of the current batch read from the spill file

    async def __aenter__(self) -> LogStore:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- writing --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background writer (idempotent). Records submitted earlier are kept."""
        if self._task is None and not self._closed:
            self._open_spill(waiting_only=True)  # an earlier run's records; else when needed
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
            if len(self._pending) + len(self._batch) > self._max_buffer:
                self._enforce_bound()
        # The writer samples the buffer gauge per batch; here it would cost more than the rest.
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
        spilled = self._spill is not None and self._spill.backlog
        if self._task is None and (self._pending or self._batch or spilled):
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
        if self._open_spill() and (self._pending or len(self._batch) > self._batch_spilled):
            if self._batch_spilled:  # its rows are still in the spill, where they came from
                self._batch.clear()
                self._batch_spilled = 0
            elif self._batch:  # older than everything in the spill: it goes before it
                self._to_spill(self._batch, first=True)
                self._batch.clear()
            self._to_spill(list(self._pending.values()))
            self._pending.clear()
        lost = len(self._pending) + len(self._batch) - self._batch_spilled
        if lost:
            self._drop(lost)
            logger.error("log store closed with %d execution records unstored", lost)
        self._pending.clear()
        self._batch.clear()
        if self._spill is not None and self._spill.is_open:
            kept = self._spill.records
            if kept:
                logger.warning(
                    "log store closed with %d execution records in the spill file %s; "
                    "they are stored at the next start",
                    kept,
                    self._spill.path,
                )
            try:
                self._spill.close()
            except OSError as e:
                logger.error("could not close the log spill file %s: %s", self._spill.path, e)
        self._closed = True
        self._resolve_waiters()

    def stats(self) -> LogStoreStats:
        """Current counters."""
        spilled = self._spill.records if self._spill is not None else 0
        return LogStoreStats(
            queued=len(self._pending) + len(self._batch) - self._batch_spilled + spilled,
            written=self._written,
            dropped=self._dropped,
            write_errors=self._write_errors,
            spilled=spilled,
        )

    def _enforce_bound(self) -> None:
        # The batch being written is the oldest data, but it is already on its way; move (or
        # drop) the records queued behind it.
        excess = len(self._pending) + len(self._batch) - self._max_buffer
        if excess > 0 and self._open_spill():
            count = min(max(excess, self._spill_chunk), len(self._pending))
            self._to_spill([self._pending.popitem(last=False)[1] for _ in range(count)])
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
        metrics.log_buffer(len(self._pending) + len(self._batch))
        self._resolve_waiters()

    def _oldest_seq(self) -> int:
        # The queues are in seq order, so their heads hold the oldest unstored submission.
        oldest = self._seq + 1
        if self._batch:
            oldest = self._batch[0].seq
        if self._spill_seqs:
            oldest = min(oldest, self._spill_seqs[0][1])
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
            if not self._batch and self._spill is not None and self._spill.backlog:
                # Spilled records are older than any in the buffer: store them first, so a
                # record's later version (in the buffer) is written after its earlier one.
                self._take_spilled()
                if not self._batch:  # only unreadable rows (counted): on to the next ones
                    continue
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
        spill = self._spill
        while self._pending and len(self._batch) < self._batch_size:
            if spill is not None and spill.backlog:
                # Records spilled while this batch was taken are newer than it but older than
                # what is left: store them first, or an id's earlier version could win.
                break
            if self._batch and len(self._batch) % 128 == 0:
                # Redaction costs CPU (~1 ms per 128 records): let requests run in between.
                await asyncio.sleep(0)
            _, entry = self._pending.popitem(last=False)
            try:
                assert entry.record is not None  # only rows read back from the spill lack one
                entry.row = self._writer.row(entry.record)
            except Exception:
                self._drop(1)
                logger.exception("execution %s cannot be stored; dropped", entry.id)
                continue
            self._batch.append(entry)
        self._resolve_waiters()

    async def _write_batch(self) -> None:
        try:
            await self._writer.write([entry.row for entry in self._batch if entry.row is not None])
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
        if self._batch_spilled:
            self._mark_spill_stored()
        self._overflow_drops = 0
        metrics.log_buffer(len(self._pending) + len(self._batch))
        self._resolve_waiters()

    async def _write_single(self, entry: _Entry) -> None:
        try:
            await self._writer.write([entry.row] if entry.row is not None else [])
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            self._write_errors += 1
            self._drop(1)
            logger.error(
                "execution %s refused by the database (%s); dropped", entry.id, _describe(exc)
            )
        else:
            self._written += 1

    # --- the spill file -------------------------------------------------------------------

    def _open_spill(self, *, waiting_only: bool = False) -> bool:
        """Whether the spill file is usable, opening it (and recovering its rows) if need be."""
        spill = self._spill
        if spill is None or self._closed:
            return False
        if spill.is_open:
            return True
        try:
            waiting = spill.open(waiting_only=waiting_only)
        except OSError as e:
            logger.error("no log spill file (%s): a full buffer drops records", e)
            self._spill = None
            return False
        if spill.torn:
            self._drop(spill.torn)
        if waiting:
            self._spill_seqs.append([waiting, 0])  # older than anything submitted since
            self._wakeup.set()
        return spill.is_open

    def _to_spill(self, entries: list[_Entry], *, first: bool = False) -> None:
        """Write buffered records to the spill file, after its rows (or before them, ``first``),
        dropping with a count and a log line those it cannot take."""
        assert self._spill is not None
        rows: list[dict[str, Any]] = []
        for entry in entries:
            try:
                assert entry.record is not None
                rows.append(dict(zip(COLUMNS, self._writer.redacted(entry.record), strict=True)))
            except Exception:
                self._drop(1)
                logger.exception("execution %s cannot be stored; dropped", entry.id)
        if not rows:
            return
        try:
            written, refused = (self._spill.prepend if first else self._spill.append)(rows)
        except OSError as e:
            written, refused = 0, len(rows)
            logger.error("could not write to the log spill file %s: %s", self._spill.path, e)
        if written:
            if first:
                self._spill_seqs.appendleft([written, entries[0].seq])
            else:
                self._spill_seqs.append([written, entries[0].seq])
        if refused:
            self._drop(refused)
            self._overflow_drops += refused
            logger.warning(
                "execution log buffer and spill file full (%d records, %d bytes): dropped %d "
                "records (%d in total)",
                self._max_buffer,
                self._spill.max_bytes,
                refused,
                self._dropped,
            )

    def _take_spilled(self) -> None:
        """Read the next batch from the spill file into ``_batch``."""
        assert self._spill is not None
        rows = self._spill.read(self._batch_size)
        if not rows:  # everything waiting was read already (never left unstored): read again
            self._spill.unread()
            rows = self._spill.read(self._batch_size)
        first_seq = self._spill_seqs[0][1] if self._spill_seqs else 0
        # A record and its update may both be in the file: one row per id and statement
        # (PostgreSQL refuses to update a row twice in one), the later version.
        batch: dict[str, _Entry] = {}
        for data in rows:
            try:
                assert data is not None
                values = [data[name] for name in COLUMNS]
                values[TIMESTAMP] = datetime.fromisoformat(values[TIMESTAMP])
                entry = _Entry(first_seq, None, self._writer.bound(values))
            except Exception:
                self._drop(1)
                logger.error("unreadable row in the log spill file %s; dropped", self._spill.path)
                continue
            if (earlier := batch.get(entry.id)) is not None:
                earlier.row = entry.row
            else:
                batch[entry.id] = entry
        self._batch.extend(batch.values())
        self._batch_spilled = len(rows)
        if not self._batch:  # only unreadable rows: nothing to write, move past them
            self._mark_spill_stored()

    def _mark_spill_stored(self) -> None:
        assert self._spill is not None
        count, self._batch_spilled = self._batch_spilled, 0
        try:
            self._spill.mark_stored(count)
        except OSError as e:
            # Stored, but the file cannot say so: the rows would be stored again (the same
            # versions, an idempotent upsert) after a restart.
            logger.error("could not update the log spill file %s: %s", self._spill.path, e)
        while count and self._spill_seqs:
            head = self._spill_seqs[0]
            taken = min(count, head[0])
            head[0] -= taken
            count -= taken
            if not head[0]:
                self._spill_seqs.popleft()
        if not self._spill.backlog:
            self._spill_seqs.clear()

    # --- reading --------------------------------------------------------------------------

    async def query(
        self,
        *,
        action: str | None = None,
        agent: str | None = None,
        conversation_id: str | None = None,
        outcome: Outcome | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[ExecutionRecord], str | None]:
        """Stored records, newest first, filtered by any combination of fields.

        A shorthand for :func:`gateway.stores.log_queries.query_page` (which also filters by
        time), with the same cursors.

        Raises:
            ValueError: If ``cursor`` is not one a log query returned.
        """
        where = LogFilter(
            action=action, agent=agent, conversation_id=conversation_id, outcome=outcome
        )
        return await query_page(self._engine, where, limit=limit, cursor=cursor)

    async def get(self, record_id: str) -> ExecutionRecord | None:
        """The stored record with this id, or None."""
        return await get_record(self._engine, record_id)


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
