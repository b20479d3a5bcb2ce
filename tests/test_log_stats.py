"""The Overview's statistics (gateway.stores.log_stats), on SQLite and PostgreSQL, checked
against the same numbers computed from the records in Python."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.engine.limits import busy_reason, open_reason, rate_reason
from gateway.stores.db import (
    MIGRATIONS,
    execution_hours,
    executions,
    migrate,
    schema_migrations,
)
from gateway.stores.durations import RELATIVE_ERROR
from gateway.stores.hourly_stats import backfill
from gateway.stores.log_stats import Group, compute_overview, parse_window
from gateway.stores.logs import OUTCOMES, ExecutionRecord, LogStore
from gateway.stores.outcome_groups import FAILURES, REASON_PREFIXES, REFUSALS
from tests.conftest import Database
from tests.test_logstore import make_record

NOW = datetime(2026, 12, 7, 12, 17, 23, tzinfo=UTC)
"""Not on an hour: the window's first, partial hour is read from the log, the rest from
``execution_hours``."""
ACTIONS = ("get_customer_account", "book_a_demo", "return_request")
AGENTS = ("support", "sales", None)


def _made(count: int, seed: int = 7) -> list[ExecutionRecord]:
    """Records spread over the last 8 days (so some fall outside every window)."""
    rng = random.Random(seed)
    weights = {"success": 60, "http_error": 8, "timeout": 4, "connect_error": 2, "blocked": 3}
    weights |= {"rejected": 10, "pending_confirmation": 3, "declined": 4}
    outcomes, chances = list(weights), list(weights.values())
    rejections = ["missing value lead.email", "this conversation made 5 action calls in 60 s"]
    rejections.append("the API behind this action is failing right now, so ...")
    made = []
    for i in range(count):
        outcome = rng.choices(outcomes, chances)[0]
        error = None
        if outcome == "rejected":
            error = rng.choice(rejections)
        elif outcome == "declined":
            error = "the customer declined, so the action was not run"
        made.append(
            dataclasses.replace(
                make_record(i),
                timestamp=NOW - timedelta(seconds=rng.uniform(0, 8 * 86400)),
                action=rng.choice(ACTIONS),
                agent_id=rng.choice(AGENTS),
                outcome=outcome,
                error=error,
                duration_ms=rng.lognormvariate(5, 1.2),
                injected=rng.random() < 0.7,
            )
        )
    return made


@pytest.fixture
async def records(db_engine: AsyncEngine) -> AsyncIterator[list[ExecutionRecord]]:
    made = _made(3000)
    async with LogStore(db_engine) as store:
        for record in made:
            store.submit(record)
        await store.flush()
        yield made


def _exact(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def _expected(records: list[ExecutionRecord]) -> Group:
    """The group's numbers computed from its records one by one."""
    counted = [r for r in records if r.outcome != "pending_confirmation"]
    sent = [r.duration_ms for r in counted if r.outcome == "success" or r.outcome in FAILURES]
    return Group(
        key=None,
        executions=len(counted),
        successes=sum(r.outcome == "success" for r in counted),
        failures=sum(r.outcome in FAILURES for r in counted),
        refusals=sum(r.outcome in REFUSALS for r in counted),
        pending=len(records) - len(counted),
        injected=sum(r.injected for r in counted),
        p50_ms=_exact(sent, 0.5),
        p95_ms=_exact(sent, 0.95),
    )


def _assert_matches(got: Group, want: Group) -> None:
    counts = ("executions", "successes", "failures", "refusals", "pending", "injected")
    assert {k: getattr(got, k) for k in counts} == {k: getattr(want, k) for k in counts}
    assert got.success_rate == pytest.approx(want.successes / want.executions)
    assert got.injected_share == pytest.approx(want.injected / want.executions)
    for name in ("p50_ms", "p95_ms"):
        estimate, exact = getattr(got, name), getattr(want, name)
        assert estimate is not None and exact is not None
        assert abs(estimate / exact - 1) <= RELATIVE_ERROR, (name, estimate, exact)


@pytest.mark.parametrize("window", ["1h", "24h", "7d"])
async def test_each_window_counts_exactly_its_records(
    db_engine: AsyncEngine, records: list[ExecutionRecord], window: str
) -> None:
    span = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}[window]
    inside = [r for r in records if r.timestamp >= NOW - span]
    assert 0 < len(inside) < len(records)  # older records exist, and are left out
    stats = await compute_overview(db_engine, parse_window(window), now=NOW)
    _assert_matches(stats.totals, _expected(inside))
    for action in ACTIONS:
        (group,) = [g for g in stats.per_action if g.key == action]
        _assert_matches(group, _expected([r for r in inside if r.action == action]))
    assert {g.key for g in stats.per_agent} == set(AGENTS)
    for agent in AGENTS:
        (group,) = [g for g in stats.per_agent if g.key == agent]
        assert group.executions == _expected([r for r in inside if r.agent_id == agent]).executions
    assert stats.totals.outcomes == {
        o: n for o in OUTCOMES if (n := sum(r.outcome == o for r in inside))
    }


async def test_the_series_adds_up_to_the_totals_in_slots_of_the_window(
    db_engine: AsyncEngine, records: list[ExecutionRecord]
) -> None:
    stats = await compute_overview(db_engine, "7d", now=NOW)
    assert stats.slot_seconds == 6 * 3600
    assert len(stats.series) == 29  # 7 days of 6 h slots, the first one partial
    starts = [s.start for s in stats.series]
    assert starts == sorted(starts) and starts[0] <= NOW - timedelta(days=7) < starts[1]
    assert sum(s.successes for s in stats.series) == stats.totals.successes
    assert sum(s.failures for s in stats.series) == stats.totals.failures
    assert sum(s.refusals for s in stats.series) == stats.totals.refusals
    # Each slot holds what started in it.
    inside = [r for r in records if r.timestamp >= NOW - timedelta(days=7)]
    for slot in stats.series[1:]:
        end = slot.start + timedelta(hours=6)
        there = [r for r in inside if slot.start <= r.timestamp < end]
        assert slot.successes == sum(r.outcome == "success" for r in there)

    hourly = await compute_overview(db_engine, "1h", now=NOW)
    assert hourly.slot_seconds == 60 and len(hourly.series) == 61


async def test_one_agent_only(db_engine: AsyncEngine, records: list[ExecutionRecord]) -> None:
    stats = await compute_overview(db_engine, "7d", agent="sales", now=NOW)
    inside = [r for r in records if r.timestamp >= NOW - timedelta(days=7)]
    sales = [r for r in inside if r.agent_id == "sales"]
    _assert_matches(stats.totals, _expected(sales))
    assert [g.key for g in stats.per_agent] == ["sales"]
    assert stats.agent == "sales"
    assert sum(g.executions for g in stats.per_action) == stats.totals.executions


async def test_refusals_by_outcome_and_reason(
    db_engine: AsyncEngine, records: list[ExecutionRecord]
) -> None:
    stats = await compute_overview(db_engine, "7d", now=NOW)
    inside = [r for r in records if r.timestamp >= NOW - timedelta(days=7)]
    got = {(r.outcome, r.reason): r.count for r in stats.refusals}

    def count(outcome: str, start: str = "") -> int:
        return sum(r.outcome == outcome and (r.error or "").startswith(start) for r in inside)

    assert got == {
        ("rejected", "rate_limited"): count("rejected", "this conversation made"),
        ("rejected", "circuit_open"): count("rejected", "the API behind"),
        ("rejected", "invalid_call"): count("rejected", "missing value"),
        ("declined", "customer_declined"): count("declined"),
        ("blocked", "egress_policy"): count("blocked"),
    }
    assert sum(got.values()) == stats.totals.refusals
    counts = [r.count for r in stats.refusals]
    assert counts == sorted(counts, reverse=True)


async def test_an_empty_window_has_zeros_and_no_percentiles(db_engine: AsyncEngine) -> None:
    stats = await compute_overview(db_engine, "24h", now=NOW)
    assert stats.totals.executions == 0 and stats.totals.success_rate is None
    assert stats.totals.p50_ms is None and stats.per_action == [] and stats.refusals == []
    assert len(stats.series) == 25 and all(s.successes == 0 for s in stats.series)
    data = stats.to_dict()
    assert data["window"] == "24h" and data["since"] == "2026-12-06T12:17:23Z"
    assert data["series"]["slot_seconds"] == 3600


async def _hours(engine: AsyncEngine) -> list[dict[str, object]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(execution_hours).order_by(*execution_hours.primary_key.columns)
        )
        return [dict(row) for row in rows.mappings()]


async def test_stored_again_records_move_their_counts_and_a_backfill_agrees(
    db_engine: AsyncEngine, records: list[ExecutionRecord]
) -> None:
    # The injected update of an execution, and a record whose outcome changes, upsert it.
    changed = [dataclasses.replace(r, injected=not r.injected) for r in records[:200]]
    changed += [
        dataclasses.replace(r, outcome="timeout", error=None, duration_ms=5000.0)
        for r in records[200:260]
    ]
    async with LogStore(db_engine) as store:
        for record in changed:
            store.submit(record)
        await store.flush()
    now = [*changed, *records[260:]]
    for window, span in (("24h", timedelta(days=1)), ("7d", timedelta(days=7))):
        stats = await compute_overview(db_engine, window, now=NOW)  # type: ignore[arg-type]
        _assert_matches(stats.totals, _expected([r for r in now if r.timestamp >= NOW - span]))

    kept = await _hours(db_engine)
    async with db_engine.begin() as connection:
        written = await connection.run_sync(lambda c: backfill(c, executions, execution_hours))
    rebuilt = await _hours(db_engine)
    assert written == len(rebuilt) and len(rebuilt) > 100
    assert [
        r for r in kept if any(v for k, v in r.items() if k not in ("hour", "agent_id", "action"))
    ] == rebuilt


def test_an_unknown_window_is_named() -> None:
    assert parse_window(None) == "24h" and parse_window("") == "24h"
    with pytest.raises(ValueError, match=r"unknown window '2h': use one of 1h, 24h, 7d"):
        parse_window("2h")


def test_the_reason_texts_are_the_engines() -> None:
    from gateway.definitions.config import LimitsConfig

    texts = {
        "rate_limited": rate_reason(LimitsConfig(rate=5, per_s=60)),
        "circuit_open": open_reason(12.0),
        "concurrency_limit": busy_reason(),
    }
    for reason, prefix in REASON_PREFIXES["rejected"]:
        assert texts[reason].startswith(prefix), reason


async def test_two_replicas_writing_at_once_keep_the_hours_exact(database: Database) -> None:
    engines = [database.engine(), database.engine()]
    await migrate(engines[0])
    made = _made(1200, seed=11)
    stores = [LogStore(engine, batch_size=50, linger_s=0) for engine in engines]
    for store in stores:
        await store.start()
    for i, record in enumerate(made):  # the same hours, agents and actions from both
        stores[i % 2].submit(record)
        if i % 100 == 0:
            await asyncio.sleep(0)
    await asyncio.gather(*(store.flush() for store in stores))
    for store in stores:
        await store.close()
    kept = await _hours(engines[0])
    async with engines[0].begin() as connection:
        await connection.run_sync(lambda c: backfill(c, executions, execution_hours))
    assert kept == await _hours(engines[0])
    stats = await compute_overview(engines[0], "7d", now=NOW)
    _assert_matches(
        stats.totals, _expected([r for r in made if r.timestamp >= NOW - timedelta(days=7)])
    )


async def test_the_migration_sums_the_records_stored_before_it(database: Database) -> None:
    engine = database.engine()
    stamp = datetime.now(UTC)
    made = _made(400, seed=3)

    def log_of_migration_5(connection: Any) -> None:
        schema_migrations.create(connection)
        for fn in MIGRATIONS:
            if fn.__name__ < "m006":
                fn(connection)
                connection.execute(
                    insert(schema_migrations).values(name=fn.__name__, applied_at=stamp)
                )
        rows = [r.to_dict() | {"timestamp": r.timestamp} for r in made]
        for row in rows:
            row["request"] = json.dumps(row["request"])
            row["response"] = json.dumps(row["response"])
        connection.execute(insert(executions), rows)

    async with engine.begin() as connection:
        await connection.run_sync(log_of_migration_5)
    applied = await migrate(engine)
    assert applied[0] == "m006_execution_hours"
    stats = await compute_overview(engine, "7d", now=NOW)
    inside = [r for r in made if r.timestamp >= NOW - timedelta(days=7)]
    _assert_matches(stats.totals, _expected(inside))
    assert {(r.outcome, r.reason) for r in stats.refusals} >= {("rejected", "rate_limited")}
