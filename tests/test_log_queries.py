"""Filtered log queries (gateway.stores.log_queries), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.stores.log_queries import LogFilter, iter_records, query_page
from gateway.stores.logs import ExecutionRecord, LogStore
from tests.test_logstore import make_record

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def records(db_engine: AsyncEngine) -> AsyncIterator[list[ExecutionRecord]]:
    """30 stored records, one a minute from START, with mixed actions, agents and outcomes."""
    made = [
        dataclasses.replace(make_record(i), timestamp=START + timedelta(minutes=i))
        for i in range(30)
    ]
    async with LogStore(db_engine) as store:
        for record in made:
            store.submit(record)
        await store.flush()
        yield made


def _matching(records: list[ExecutionRecord], **fields: object) -> list[str]:
    """Ids of the records whose fields equal ``fields``, newest first."""
    chosen = [r for r in records if all(getattr(r, k) == v for k, v in fields.items())]
    return [r.id for r in sorted(chosen, key=lambda r: r.timestamp, reverse=True)]


async def _all_ids(engine: AsyncEngine, where: LogFilter, limit: int) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await query_page(engine, where, limit=limit, cursor=cursor)
        ids += [r.id for r in page]
        if cursor is None:
            return ids


async def test_each_filter_and_their_combination_select_exactly_the_matching_records(
    db_engine: AsyncEngine, records: list[ExecutionRecord]
) -> None:
    cases = [
        (LogFilter(action="book_a_demo"), {"action": "book_a_demo"}),
        (LogFilter(agent="sales"), {"agent_id": "sales"}),
        (LogFilter(conversation_id="c3"), {"conversation_id": "c3"}),
        (LogFilter(outcome="timeout"), {"outcome": "timeout"}),
        (
            LogFilter(action="get_customer_account", agent="support", outcome="success"),
            {"action": "get_customer_account", "agent_id": "support", "outcome": "success"},
        ),
    ]
    for where, fields in cases:
        expected = _matching(records, **fields)
        assert expected, fields  # the fixture must exercise every case
        assert await _all_ids(db_engine, where, limit=2) == expected, fields


async def test_the_time_range_includes_since_and_excludes_until(
    db_engine: AsyncEngine, records: list[ExecutionRecord]
) -> None:
    where = LogFilter(since=START + timedelta(minutes=5), until=START + timedelta(minutes=9))
    page, cursor = await query_page(db_engine, where, limit=100)
    assert cursor is None
    assert [r.id for r in page] == [records[i].id for i in (8, 7, 6, 5)]

    # Another offset names the same moments; a naive value is UTC.
    paris = timezone(timedelta(hours=1))
    shifted = LogFilter(since=datetime(2026, 12, 1, 10, 5, tzinfo=paris))
    naive = LogFilter(until=datetime(2026, 12, 1, 9, 2))
    assert [r.id for r in (await query_page(db_engine, shifted, limit=100))[0]][-1] == records[5].id
    assert [r.id for r in (await query_page(db_engine, naive, limit=100))[0]] == [
        records[1].id,
        records[0].id,
    ]


async def test_a_range_combines_with_other_filters_across_pages(
    db_engine: AsyncEngine, records: list[ExecutionRecord]
) -> None:
    since, until = START + timedelta(minutes=4), START + timedelta(minutes=25)
    where = LogFilter(agent="support", since=since, until=until)
    expected = [
        r.id for r in reversed(records) if r.agent_id == "support" and since <= r.timestamp < until
    ]
    assert len(expected) > 3
    assert await _all_ids(db_engine, where, limit=3) == expected


async def test_cursors_are_those_of_the_log_store_and_bad_ones_are_refused(
    db_engine: AsyncEngine, records: list[ExecutionRecord]
) -> None:
    store = LogStore(db_engine)
    first, cursor = await store.query(action="return_request", limit=4)
    assert cursor is not None
    rest, _ = await query_page(db_engine, LogFilter(action="return_request"), cursor=cursor)
    assert [r.id for r in first + rest] == _matching(records, action="return_request")
    with pytest.raises(ValueError, match="invalid cursor"):
        await query_page(db_engine, LogFilter(), cursor="not-a-cursor")


async def test_iter_records_walks_every_matching_record_once_in_pages(
    db_engine: AsyncEngine, records: list[ExecutionRecord]
) -> None:
    walked = [r async for r in iter_records(db_engine, LogFilter(outcome="success"), page_size=1)]
    assert [r.id for r in walked] == _matching(records, outcome="success")
    assert (
        walked[0].to_dict() == next(r for r in records if r.id == walked[0].id).to_dict()
    )  # every field survives the round trip
    everything = [r.id async for r in iter_records(db_engine, LogFilter(), page_size=7)]
    assert everything == [r.id for r in reversed(records)]
