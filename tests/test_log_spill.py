"""A flood of records the writer cannot keep up with spills to disk: stored later, never lost
silently (issue 18)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.redaction import Redactor
from gateway.stores.db import executions
from gateway.stores.engines import create_engine
from gateway.stores.log_records import COLUMNS, redacted_row
from gateway.stores.log_spill import LogSpill
from gateway.stores.logs import ExecutionRecord, LogStore, new_record
from tests.test_logstore import EventOnLog

# The spill is for SQLite files (where a flood outruns the writer); PostgreSQL has none.
sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)

CONTENT = '{"error": "get_customer_account was not called: rate limit exceeded"}'


def refusal(index: int) -> ExecutionRecord:
    """A rate-limited call, as the executor records it before the model sees it."""
    return new_record(
        action="get_customer_account",
        outcome="rejected",
        agent_id="support",
        conversation_id=f"c{index % 50}",
        tool_call_id=f"call_{index}",
        request={
            "method": "GET",
            "url": f"https://api.example.com/customers?email=u{index}%40example.com",
            "headers": {"Authorization": "Bearer sk-live-abcdef123456"},
            "body": None,
        },
        error="rate limit exceeded: 10 calls per 60 s",
    )


def injected(record: ExecutionRecord) -> ExecutionRecord:
    return dataclasses.replace(record, injected=True, injected_content=CONTENT)


async def rows(engine: AsyncEngine) -> tuple[int, int]:
    """(rows, rows with ``injected`` set) in the executions table."""
    async with engine.connect() as connection:
        total = await connection.scalar(select(func.count()).select_from(executions))
        done = await connection.scalar(
            select(func.count()).select_from(executions).where(executions.c.injected)
        )
    return total or 0, done or 0


def dropped_metric() -> float:
    return REGISTRY.get_sample_value("actiongate_log_records_dropped_total") or 0.0


@pytest.fixture
async def dead_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A database that cannot be reached: every write fails (and is retried)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'gone.db'}")
    yield engine
    await engine.dispose()
    # A store closed with a timeout may leave a connect attempt running in aiosqlite's thread;
    # it reports back through this loop, which must still be open when it does (else the
    # thread's "Event loop is closed" lands on a later test).
    await asyncio.sleep(0.1)


@sqlite_only
async def test_a_flood_faster_than_the_writer_stores_every_record(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    # 30,000 refusals and their `injected` updates with no pause: the writer cannot run in
    # between, so 20,000 records overflow the 10,000-record buffer, as a flood of ~12,500/s
    # did on this machine before the spill (all of them dropped then).
    spill = tmp_path / "log-spill.jsonl"
    store = LogStore(db_engine, spill_path=spill, max_buffer=10_000)
    await store.start()
    dropped_before = dropped_metric()
    records = [refusal(i) for i in range(30_000)]
    for record in records:
        store.submit(record)
        store.submit(injected(record))
    stats = store.stats()
    assert stats["dropped"] == 0
    assert stats["spilled"] >= 20_000
    assert stats["queued"] == 30_000
    assert spill.stat().st_size > 0

    await store.flush()
    assert await rows(db_engine) == (30_000, 30_000)
    assert store.stats()["spilled"] == 0
    await store.close()
    assert store.stats()["dropped"] == 0
    assert dropped_metric() == dropped_before
    assert not spill.exists()  # drained, so removed at close


@sqlite_only
async def test_a_sustained_flood_through_the_event_loop_loses_nothing(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    # The benchmark's shape: bursts of refusals from request handlers, each record submitted
    # twice, yielding between bursts so the writer runs in between, as it does in the server.
    store = LogStore(db_engine, spill_path=tmp_path / "spill.jsonl", max_buffer=500)
    await store.start()
    peak = 0
    for burst in range(125):
        for i in range(burst * 100, burst * 100 + 100):
            record = refusal(i)
            store.submit(record)
            store.submit(injected(record))
        peak = max(peak, store.stats()["queued"])
        await asyncio.sleep(0)
    assert peak > 500  # more than the buffer holds: without the spill, records were dropped
    await store.close()
    assert store.stats()["dropped"] == 0
    assert await rows(db_engine) == (12_500, 12_500)


@sqlite_only
async def test_the_spill_survives_a_restart_and_is_stored_exactly_once(
    db_engine: AsyncEngine, dead_engine: AsyncEngine, tmp_path: Path
) -> None:
    spill = tmp_path / "spill.jsonl"
    down = LogStore(
        dead_engine, spill_path=spill, max_buffer=20, retry_initial_s=0.01, retry_max_s=0.02
    )
    await down.start()
    records = [refusal(i) for i in range(200)]
    failed = EventOnLog("could not store")
    logging.getLogger("actiongate.logs").addHandler(failed)
    try:
        for record in records[:20]:
            down.submit(record)
        # The writer now holds these 20 as its batch, older than anything spilled next.
        async with asyncio.timeout(10):
            await failed.seen.wait()
    finally:
        logging.getLogger("actiongate.logs").removeHandler(failed)
    for record in records[20:]:
        down.submit(record)
    # The `injected` updates come after their records went to disk: the later version must win.
    for record in records[::2]:
        down.submit(injected(record))
    assert down.stats()["spilled"] > 0
    await down.close(timeout_s=0.2)  # the database never came back
    assert down.stats()["dropped"] == 0
    assert down.stats()["spilled"] == down.stats()["queued"] > 0
    assert spill.exists()
    assert await rows(db_engine) == (0, 0)

    # Restarted on a reachable database: the spill is stored first, then removed.
    async with LogStore(db_engine, spill_path=spill) as restarted:
        await restarted.flush()
        assert restarted.stats()["spilled"] == 0
    assert await rows(db_engine) == (200, 100)
    for record in records[:4]:
        stored = await restarted.get(record.id)
        assert stored is not None
        assert stored.injected == (records.index(record) % 2 == 0)
        assert stored.request["headers"] == {"Authorization": "[REDACTED]"}
    assert not spill.exists()

    # Stored once: a later start replays nothing over a row changed since.
    async with db_engine.begin() as connection:
        await connection.execute(update(executions).values(injected_content="changed later"))
    async with LogStore(db_engine, spill_path=spill) as again:
        await again.flush()
        assert again.stats()["written"] == 0
    async with db_engine.connect() as connection:
        contents = set((await connection.execute(select(executions.c.injected_content))).scalars())
    assert contents == {"changed later"}


@sqlite_only
async def test_a_crash_replays_at_most_the_unmarked_rows_and_cuts_a_torn_line(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    spill_path = tmp_path / "spill.jsonl"
    spill = LogSpill(spill_path)
    spill.open()
    written = [refusal(i) for i in range(5)]
    spill.append(_row(r) for r in written)
    spill.read(2)
    spill.mark_stored(2)  # two rows stored, then the process dies mid-append
    spill._require().seek(0, 2)
    spill._require().write(b'{"id": "torn')
    spill._require().flush()
    # No close(): the lock goes with the file descriptor, as it would with the process.
    spill._require().close()

    dropped_before = dropped_metric()
    async with LogStore(db_engine, spill_path=spill_path) as restarted:
        await restarted.flush()
        stats = restarted.stats()
    assert stats["written"] == 3  # the unmarked rows only
    assert stats["dropped"] == 1  # the torn row: counted, not silent
    assert dropped_metric() == dropped_before + 1
    page, _ = await restarted.query(limit=10)
    assert {r.id for r in page} == {r.id for r in written[2:]}


@sqlite_only
async def test_an_unreadable_spilled_row_is_counted_and_the_rest_stored(
    db_engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill_path = tmp_path / "spill.jsonl"
    spill = LogSpill(spill_path)
    spill.open()
    good = [refusal(i) for i in range(2)]
    spill.append([_row(good[0])])
    spill.append([{"id": "x", "not": "a row"}])  # JSON, but not the row layout
    spill._require().close()
    with spill_path.open("ab") as raw:  # a line no version of actiongate wrote
        raw.write(b"not json at all\n")
    spill = LogSpill(spill_path)
    spill.open()
    spill.append([_row(good[1])])
    spill._require().close()

    async with LogStore(db_engine, spill_path=spill_path) as restarted:
        await restarted.flush()
        stats = restarted.stats()
    assert (stats["written"], stats["dropped"], stats["spilled"]) == (2, 2, 0)
    assert "unreadable row in the log spill file" in caplog.text
    assert await rows(db_engine) == (2, 0)


def _row(record: ExecutionRecord) -> dict[str, object]:
    return dict(zip(COLUMNS, redacted_row(record, Redactor()), strict=True))


async def test_an_outage_with_a_flood_counts_every_record_it_cannot_keep(
    dead_engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LogStore(
        dead_engine,
        spill_path=tmp_path / "spill.jsonl",
        spill_max_bytes=64 * 1024,  # room for ~150 refusals
        max_buffer=100,
        retry_initial_s=0.01,
        retry_max_s=0.02,
    )
    await store.start()
    dropped_before = dropped_metric()
    for i in range(2_000):
        store.submit(refusal(i))
    stats = store.stats()
    assert stats["spilled"] > 0
    assert stats["dropped"] > 0
    assert stats["dropped"] + stats["queued"] == 2_000
    assert "spill file full" in caplog.text
    assert dropped_metric() - dropped_before == stats["dropped"]

    with caplog.at_level(logging.WARNING, logger="actiongate.logs"):
        await store.close(timeout_s=0.1)
    final = store.stats()
    assert final["dropped"] + final["spilled"] == 2_000
    assert dropped_metric() - dropped_before == final["dropped"]
    assert "in the spill file" in caplog.text


async def test_without_a_spill_a_full_buffer_still_drops_the_oldest_and_counts_them(
    dead_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    store = LogStore(dead_engine, max_buffer=50, retry_initial_s=0.01, retry_max_s=0.02)
    await store.start()
    dropped_before = dropped_metric()
    for i in range(500):
        store.submit(refusal(i))
    assert store.stats()["dropped"] == 450
    assert dropped_metric() - dropped_before == 450
    assert "buffer full" in caplog.text
    await store.close(timeout_s=0.1)
    assert store.stats()["dropped"] == 500


@sqlite_only
async def test_stores_sharing_a_database_spill_to_their_own_files(
    db_engine: AsyncEngine, dead_engine: AsyncEngine, tmp_path: Path
) -> None:
    spill = tmp_path / "spill.jsonl"
    workers = [LogStore(dead_engine, spill_path=spill, spill_slots=2, max_buffer=5) for _ in "ab"]
    for n, worker in enumerate(workers):
        await worker.start()
        for i in range(n * 100, n * 100 + 100):
            worker.submit(refusal(i))
    for worker in workers:
        await worker.close(timeout_s=0.05)
        assert worker.stats()["dropped"] == 0
    assert spill.exists()
    assert (tmp_path / "spill.1.jsonl").exists()

    # One process after the restart: it takes over a file with rows, then the next one.
    for _ in "ab":
        async with LogStore(db_engine, spill_path=spill, spill_slots=2) as restarted:
            await restarted.flush()
    assert await rows(db_engine) == (200, 0)
    assert not spill.exists()
    assert not (tmp_path / "spill.1.jsonl").exists()


@sqlite_only
async def test_a_second_store_on_the_same_spill_runs_without_one(
    db_engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill = tmp_path / "spill.jsonl"
    owner = LogStore(db_engine, spill_path=spill, max_buffer=5)
    for i in range(10):
        owner.submit(refusal(i))  # not started: the overflow goes to the spill
    assert owner.stats()["spilled"] == 5
    other = LogStore(db_engine, spill_path=spill, max_buffer=5)
    for i in range(10, 20):
        other.submit(refusal(i))
    assert other.stats() == {
        "queued": 5,
        "written": 0,
        "dropped": 5,
        "write_errors": 0,
        "spilled": 0,
    }
    assert "in use by other processes" in caplog.text
    await other.close()
    await owner.close()
    assert await rows(db_engine) == (15, 0)
    assert owner.stats()["dropped"] == 0


async def test_spilled_records_are_redacted_on_disk(tmp_path: Path) -> None:
    secret = "sk-live-4f9a8b7c6d5e"
    engine = create_engine(f"sqlite:///{tmp_path / 'absent' / 'x.db'}")
    spill = tmp_path / "spill.jsonl"
    store = LogStore(engine, Redactor([secret]), spill_path=spill, max_buffer=1)
    for i in range(3):
        store.submit(dataclasses.replace(refusal(i), error=f"upstream said {secret}"))
    raw = spill.read_bytes()
    assert b"[REDACTED]" in raw
    assert secret.encode() not in raw
    assert b"sk-live-abcdef123456" not in raw  # the Authorization header, by name
    await store.close(timeout_s=0.05)
    await engine.dispose()


@sqlite_only
async def test_spilled_records_reach_the_hourly_sums_once(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    # The Overview reads whole hours from execution_hours, which the writer keeps: records
    # that waited in the spill (and their injected updates) must be summed there exactly once.
    from datetime import timedelta

    from gateway.stores.log_stats import compute_overview

    store = LogStore(db_engine, spill_path=tmp_path / "log-spill.jsonl", max_buffer=2_000)
    await store.start()
    earlier = refusal(0).timestamp - timedelta(hours=3)  # a whole hour, read from the sums
    records = [
        dataclasses.replace(refusal(i), timestamp=earlier) if i % 2 else refusal(i)
        for i in range(12_000)
    ]
    for record in records:
        store.submit(record)
    assert store.stats()["spilled"] > 0
    await store.flush()
    for record in records:  # the updates of stored records, through the spill too
        store.submit(injected(record))
    assert store.stats()["spilled"] > 0
    await store.flush()
    await store.close()
    assert await rows(db_engine) == (12_000, 12_000)
    overview = await compute_overview(db_engine, "24h")
    assert overview.totals.refusals == overview.totals.executions == 12_000
    assert overview.totals.injected == 12_000  # each update moved its record, not added one
    assert sum(slot.refusals for slot in overview.series) == 12_000
