"""The execution log store and its database layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConfigError
from gateway.redaction import Redactor
from gateway.stores.db import MIGRATIONS, execution_hours, executions, migrate, schema_migrations
from gateway.stores.engines import create_engine, database_url
from gateway.stores.hourly_stats import COUNT_COLUMNS
from gateway.stores.log_writes import ROWS_PER_STATEMENT, BatchWriter, chunk_sizes
from gateway.stores.logs import (
    OUTCOMES,
    ExecutionRecord,
    LogStore,
    new_execution_id,
    new_record,
)

if TYPE_CHECKING:
    from tests.conftest import Database


def make_record(index: int = 0, **overrides: Any) -> ExecutionRecord:
    record = new_record(
        action=["get_customer_account", "book_a_demo", "return_request"][index % 3],
        outcome=OUTCOMES[index % len(OUTCOMES)],
        agent_id=["support", "sales"][index % 2],
        conversation_id=f"c{index % 10}",
        tool_call_id=f"call_{index}",
        request={
            "method": "GET",
            "url": f"https://api.example.com/customers?email=a{index}@b.c",
            "headers": {"Content-Type": "application/json"},
            "body": None,
        },
        response={"status_code": 200, "body": f'{{"n": {index}}}', "truncated": False},
        duration_ms=12.5,
    )
    return dataclasses.replace(record, **overrides)


@pytest.fixture
async def store(db_engine: AsyncEngine) -> AsyncIterator[LogStore]:
    async with LogStore(db_engine) as log_store:
        yield log_store


async def all_pages(store: LogStore, limit: int, **filters: Any) -> list[list[ExecutionRecord]]:
    pages: list[list[ExecutionRecord]] = []
    cursor: str | None = None
    while True:
        page, cursor = await store.query(limit=limit, cursor=cursor, **filters)
        pages.append(page)
        if cursor is None:
            return pages


class EventOnLog(logging.Handler):
    """Sets an asyncio event when the log store logs a message containing ``needle``."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.WARNING)
        self.needle = needle
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


@pytest.fixture
def write_failures() -> Iterator[EventOnLog]:
    handler = EventOnLog("could not store")
    logger = logging.getLogger("actiongate.logs")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


# --- URLs and engines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///actiongate.db", "sqlite+aiosqlite:///actiongate.db"),
        ("sqlite:////var/lib/ag.db", "sqlite+aiosqlite:////var/lib/ag.db"),
        ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("postgresql://u:p@db:5432/ag", "postgresql+asyncpg://u:p@db:5432/ag"),
        ("postgres://u@db/ag", "postgresql+asyncpg://u@db/ag"),
        ("postgresql+asyncpg://u@db/ag", "postgresql+asyncpg://u@db/ag"),
        ("postgresql://u@db/ag?sslmode=require", "postgresql+asyncpg://u@db/ag?ssl=require"),
    ],
)
def test_database_url_normalises_to_async_drivers(given: str, expected: str) -> None:
    assert database_url(given) == expected


@pytest.mark.parametrize(
    "url", ["mysql://root:hunter2@db/ag", "hunter2@db/ag", "redis://:hunter2@x"]
)
def test_database_url_refuses_other_schemes_without_printing_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        database_url(url)
    assert "hunter2" not in str(caught.value)
    assert url.split("://")[0] in str(caught.value) or "no scheme" in str(caught.value)


async def test_sqlite_pragmas(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        async with engine.connect() as connection:
            values = [
                (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            ]
    finally:
        await engine.dispose()
    assert values == ["wal", 1, 5000, 1]


async def test_memory_database_serves_concurrent_reads_and_writes() -> None:
    engine = create_engine("sqlite:///:memory:")
    try:
        await migrate(engine)
        async with LogStore(engine, batch_size=10) as store:
            records = [make_record(i) for i in range(200)]

            async def submit_all() -> None:
                for record in records:
                    store.submit(record)
                    await asyncio.sleep(0)  # interleave with the readers, not a wait

            await asyncio.gather(submit_all(), *(store.query(limit=5) for _ in range(20)))
            await store.flush()
            page, _ = await store.query(limit=1000)
            assert {r.id for r in page} == {r.id for r in records}
            assert await store.get(records[0].id) == records[0]
    finally:
        await engine.dispose()


# --- Migrations ------------------------------------------------------------------------------


async def test_migrate_twice_is_a_no_op(database: Database) -> None:
    engine = database.engine()
    every = [m.__name__ for m in MIGRATIONS]
    assert every[0] == "m001_initial"
    assert await migrate(engine) == every
    assert await migrate(engine) == []
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        names = (await connection.execute(select(schema_migrations.c.name))).scalars().all()
        index_names = await connection.run_sync(
            lambda c: {index["name"] for index in inspect(c).get_indexes("executions")}
        )
    assert {"executions", "conversations", "actions", "agents", "secrets"} <= tables
    assert names == every
    assert {"ix_executions_timestamp_id", "ix_executions_action"} <= index_names


async def test_replicas_migrating_at_once_apply_each_migration_once(database: Database) -> None:
    engines = [database.engine() for _ in range(4)]
    results = await asyncio.gather(*(migrate(engine) for engine in engines))
    assert sorted(results) == [[], [], [], [m.__name__ for m in MIGRATIONS]]
    async with engines[0].connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(schema_migrations))
    assert count == len(MIGRATIONS)


# --- Writing and reading ---------------------------------------------------------------------


async def test_records_round_trip(store: LogStore) -> None:
    record = make_record(7, error="boom", injected=True, injected_content="the answer")
    store.submit(record)
    await store.flush()
    stored = await store.get(record.id)
    assert stored == record
    assert stored.timestamp.tzinfo is not None
    as_json = json.loads(json.dumps(stored.to_dict()))
    assert as_json["timestamp"].endswith("Z")
    assert list(as_json) == [f.name for f in dataclasses.fields(ExecutionRecord)]
    assert ExecutionRecord.from_dict(as_json) == record
    assert await store.get("no-such-id") is None


async def test_paging_through_2500_records_newest_first(store: LogStore) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    records = [
        # Groups of five share a timestamp, so the id must break ties.
        make_record(i, timestamp=start + timedelta(milliseconds=i // 5))
        for i in range(2500)
    ]
    for record in records:
        store.submit(record)
    await store.flush()
    expected = [r.id for r in sorted(records, key=lambda r: (r.timestamp, r.id), reverse=True)]

    pages = await all_pages(store, limit=97)
    seen = [record.id for page in pages for record in page]
    assert seen == expected  # no duplicates, no gaps, newest first
    assert [len(page) for page in pages] == [97] * 25 + [2500 - 97 * 25]

    for filters in ({"action": "book_a_demo"}, {"agent": "sales", "outcome": "blocked"}):
        matching = [r for r in expected if _matches(records, r, filters)]
        paged = [r.id for page in await all_pages(store, limit=50, **filters) for r in page]
        assert paged == matching
    only, cursor = await store.query(conversation_id="c3", limit=1000)
    assert len(only) == 250
    assert cursor is None
    assert {r.conversation_id for r in only} == {"c3"}


def _matches(records: list[ExecutionRecord], record_id: str, filters: dict[str, str]) -> bool:
    record = next(r for r in records if r.id == record_id)
    fields = {"action": record.action, "agent": record.agent_id, "outcome": record.outcome}
    return all(fields[name] == value for name, value in filters.items())


async def test_limit_is_clamped_and_bad_cursors_refused(store: LogStore) -> None:
    for i in range(3):
        store.submit(make_record(i))
    await store.flush()
    assert len((await store.query(limit=0))[0]) == 1
    page, cursor = await store.query(limit=5000)
    assert len(page) == 3
    assert cursor is None
    with pytest.raises(ValueError, match="invalid cursor"):
        await store.query(cursor="not a cursor")


async def test_resubmitting_a_record_updates_it(store: LogStore, db_engine: AsyncEngine) -> None:
    record = make_record()
    store.submit(record)
    await store.flush()
    store.submit(dataclasses.replace(record, injected=True, injected_content="for the model"))
    await store.flush()
    # Resubmitted before it was written: the two versions merge in the buffer.
    other = make_record(1)
    store.submit(other)
    store.submit(dataclasses.replace(other, injected=True))
    await store.flush()

    stored = await store.get(record.id)
    assert stored is not None
    assert stored.injected
    assert stored.injected_content == "for the model"
    assert (await store.get(other.id)) == dataclasses.replace(other, injected=True)
    async with db_engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(executions))
    assert count == 2


async def test_close_stores_everything_submitted_just_before(db_engine: AsyncEngine) -> None:
    store = LogStore(db_engine, batch_size=64)
    await store.start()
    records = [make_record(i) for i in range(300)]
    for record in records:
        store.submit(record)
    await store.close()
    assert store.stats() == {
        "queued": 0,
        "written": 300,
        "dropped": 0,
        "write_errors": 0,
        "spilled": 0,
    }

    reader = LogStore(db_engine)
    page, _ = await reader.query(limit=1000)
    assert {r.id for r in page} == {r.id for r in records}


async def test_submit_after_close_is_counted_not_silent(
    db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    store = LogStore(db_engine)
    await store.close()
    store.submit(make_record())
    assert store.stats()["dropped"] == 1
    assert "after the log store closed" in caplog.text


async def test_flush_needs_a_running_writer(db_engine: AsyncEngine) -> None:
    store = LogStore(db_engine)
    store.submit(make_record())
    with pytest.raises(RuntimeError, match="start"):
        await store.flush()
    await store.close()  # starts the writer just to drain what was submitted
    assert store.stats()["written"] == 1


async def test_overflow_drops_the_oldest_and_says_so(
    db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    store = LogStore(db_engine, max_buffer=10)
    records = [make_record(i) for i in range(25)]
    for record in records:  # the writer is not running yet, so everything queues
        store.submit(record)
    assert store.stats() == {
        "queued": 10,
        "written": 0,
        "dropped": 15,
        "write_errors": 0,
        "spilled": 0,
    }
    assert "buffer full" in caplog.text

    await store.start()
    await store.close()
    page, _ = await store.query(limit=100)
    assert {r.id for r in page} == {r.id for r in records[-10:]}


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_records_wait_out_a_locked_sqlite_database(
    database: Database, write_failures: EventOnLog
) -> None:
    engine = database.engine()
    await migrate(engine)

    @event.listens_for(engine.sync_engine, "connect")
    def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.cursor().execute("PRAGMA busy_timeout=20")

    await engine.dispose()  # reconnect with the short timeout
    store = LogStore(engine, retry_initial_s=0.005, retry_max_s=0.02)
    await store.start()
    assert database.path is not None
    blocker = sqlite3.connect(database.path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        records = [make_record(i) for i in range(50)]
        for record in records:
            store.submit(record)
        async with asyncio.timeout(10):
            await write_failures.seen.wait()
        assert store.stats()["queued"] == 50
        assert store.stats()["written"] == 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    async with asyncio.timeout(10):
        await store.close()
    assert store.stats()["dropped"] == 0
    assert store.stats()["write_errors"] >= 1
    page, _ = await store.query(limit=100)
    assert {r.id for r in page} == {r.id for r in records}


class TcpProxy:
    """Forwards a local port to PostgreSQL; stopping it looks like the database going away."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
                self.writers.discard(w)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@pytest.mark.parametrize(
    "database", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_records_wait_out_a_postgres_outage(
    database: Database, write_failures: EventOnLog
) -> None:
    url = make_url(database.url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    engine = database.engine(url.set(port=proxy.port).render_as_string(hide_password=False))
    await migrate(engine)
    store = LogStore(engine, retry_initial_s=0.005, retry_max_s=0.02)
    await store.start()
    store.submit(make_record(0))
    await store.flush()

    await proxy.stop()
    records = [make_record(i) for i in range(1, 51)]
    for record in records:
        store.submit(record)
    async with asyncio.timeout(10):
        await write_failures.seen.wait()
    assert store.stats()["queued"] == 50

    await proxy.start()
    try:
        async with asyncio.timeout(10):
            await store.flush()
        page, _ = await store.query(limit=100)
        assert {r.id for r in page} >= {r.id for r in records}
        assert store.stats()["dropped"] == 0
    finally:
        await store.close()
        await engine.dispose()
        await proxy.stop()


async def test_secrets_never_reach_the_database(database: Database) -> None:
    secret, password = "sk-live-4f9a8b7c6d5e", "correct horse battery"
    redactor = Redactor([secret])
    redactor.add_basic_credentials("alice", password)
    engine = database.engine()
    await migrate(engine)
    leaky = make_record(
        request={
            "method": "POST",
            "url": f"https://api.example.com/x?api_key=literal-key-123&q={secret}",
            "headers": {"Authorization": "Bearer literal-token", "X-Trace": f"t {secret}"},
            "body": {"password": "hunter22-literal", "note": f"use {secret}"},
        },
        response={"status_code": 401, "body": f"bad key {secret}", "truncated": False},
        error=f"upstream said Basic YWxpY2U6Y29ycmVjdCBob3JzZSBiYXR0ZXJ5 / {password}",
        injected_content=f"The API answered: bad key {secret}",
    )
    async with LogStore(engine, redactor) as store:
        store.submit(leaky)
    stored = await LogStore(engine).get(leaky.id)
    assert stored is not None
    assert stored.request["headers"] == {"Authorization": "[REDACTED]", "X-Trace": "t [REDACTED]"}
    assert stored.request["url"] == "https://api.example.com/x?api_key=[REDACTED]&q=[REDACTED]"

    forbidden = [secret, password, "YWxpY2U6Y29y", "literal-key-123", "literal-token", "hunter22"]
    if database.kind == "sqlite":
        await engine.dispose()
        assert database.path is not None
        raw = b"".join(p.read_bytes() for p in database.path.parent.glob(database.path.name + "*"))
        assert b"[REDACTED]" in raw
        assert not [word for word in forbidden if word.encode() in raw]
    else:
        async with engine.connect() as connection:
            dump = "\n".join(
                (await connection.execute(text("SELECT e::text FROM executions e"))).scalars()
            )
        assert "[REDACTED]" in dump
        assert not [word for word in forbidden if word in dump]


# --- Ids and indexes --------------------------------------------------------------------------


def test_ids_sort_in_issue_order() -> None:
    ids = [new_execution_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and i[12] == "7" for i in ids[:10])


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_sqlite_queries_use_an_index_without_sorting(database: Database) -> None:
    engine = database.engine()
    await migrate(engine)
    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    store = LogStore(engine)
    _, cursor = await store.query(limit=1)
    cursor = cursor or "MjAyNS0wMS0wMVQwMDowMDowMC4wMDAwMDBafDA"  # any valid cursor
    for filters in (
        {},
        {"action": "a"},
        {"agent": "s"},
        {"conversation_id": "c"},
        {"outcome": "success"},
    ):
        captured.clear()
        await store.query(cursor=cursor, limit=10, **filters)
        statement, parameters = captured[-1]
        assert database.path is not None
        with sqlite3.connect(database.path) as plain:
            plan = " ".join(
                row[3] for row in plain.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            )
        assert "USING INDEX ix_executions_" in plan, (filters, plan)
        assert "TEMP B-TREE" not in plan, (filters, plan)


def test_chunk_sizes_cover_every_row_in_at_most_nine_statement_shapes() -> None:
    shapes: set[int] = set()
    for count in range(0, 1200):
        sizes = chunk_sizes(count)
        assert sum(sizes) == count
        assert sizes == sorted(sizes, reverse=True)
        shapes.update(sizes)
    assert shapes == {ROWS_PER_STATEMENT, 128, 64, 32, 16, 8, 4, 2, 1}


async def test_batches_of_any_size_store_each_row_once_with_exact_hourly_sums(
    db_engine: AsyncEngine,
) -> None:
    # Odd batch sizes go out as several statements (and several IN lists for the stored
    # hours); re-stored records (their injected update) must still move hours exactly once.
    writer = BatchWriter(db_engine, Redactor())
    when = datetime(2026, 3, 1, 12, tzinfo=UTC)
    records = [make_record(i, timestamp=when, injected=False) for i in range(641)]
    start = 0
    for size in (1, 137, 3, 250, 250):
        await writer.write([writer.row(r) for r in records[start : start + size]])
        start += size
    again = [dataclasses.replace(r, injected=True) for r in records[100:483]]
    await writer.write([writer.row(r) for r in again])
    async with db_engine.connect() as connection:
        stored = await connection.scalar(select(func.count()).select_from(executions))
        injected = await connection.scalar(
            select(func.count()).select_from(executions).where(executions.c.injected)
        )
        hours = (
            await connection.execute(
                select(
                    func.sum(sum(execution_hours.c[c] for c in COUNT_COLUMNS)),
                    func.sum(execution_hours.c.injected),
                )
            )
        ).one()
    assert (stored, injected) == (641, 383)
    # The hours count a result that reached the model, never a pending confirmation.
    counted = sum(r.outcome != "pending_confirmation" for r in again)
    assert counted < 383
    assert tuple(hours) == (641, counted)
