"""The Overview's queries on a million execution records: how long does each window take?

Fills ``--records`` records (1,000,000 by default) spread over the last 7 days into a SQLite
file and into a fresh PostgreSQL database (``ag_overview_<random>``, created from ``--pg`` and
dropped at the end), both migrated by the gateway itself, then times
:func:`gateway.stores.log_stats.compute_overview` (every query the Overview page and
``GET /api/stats`` run) for each window, for every agent and for one, and prints a Markdown
table: the median and the slowest of ``--runs`` runs, after one warm-up run.

The records look like a busy deployment's: 4 agents of unequal traffic, 15 actions (a few
carry most calls), 80 % successes, failures and refusals with their real error texts,
log-normal durations with a median per action, ~90 % of successes injected, and more traffic
by day than by night. Bulk inserts: ``executemany`` on the SQLite file, ``COPY`` on PostgreSQL.

    .venv/bin/python bench/bench_overview.py                    # both databases, 1,000,000
    .venv/bin/python bench/bench_overview.py --db sqlite --records 200000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.stores.db import execution_hours, executions, migrate  # noqa: E402
from gateway.stores.engines import create_engine  # noqa: E402
from gateway.stores.hourly_stats import backfill  # noqa: E402
from gateway.stores.log_stats import WINDOWS, compute_overview  # noqa: E402

AGENTS = (("support", 55), ("sales", 25), ("billing", 15), ("widget", 5))
ACTIONS = tuple(f"action_{i:02d}" for i in range(15))
OUTCOMES = (
    ("success", 800),
    ("http_error", 60),
    ("timeout", 20),
    ("connect_error", 10),
    ("blocked", 10),
    ("rejected", 60),
    ("declined", 20),
    ("pending_confirmation", 20),
)
ERRORS = {
    "http_error": ["HTTP 500", "HTTP 404", "HTTP 429"],
    "timeout": ["the API did not answer within 10 seconds"],
    "connect_error": ["connection refused"],
    "blocked": ["destination 10.0.0.8 is not allowed"],
    "rejected": [
        "missing value: lead.email",
        "this conversation made 30 action calls in 60 s, the most allowed; wait",
        "the API behind this action is failing right now, so the gateway is not calling it",
        "too many calls to this action are running at once; try again shortly",
    ],
    "declined": ["the customer declined, so the action was not run"],
    "pending_confirmation": ["waiting for the customer's confirmation"],
}
COLUMNS = (
    "id",
    "timestamp",
    "agent_id",
    "conversation_id",
    "action",
    "tool_call_id",
    "request",
    "response",
    "duration_ms",
    "outcome",
    "error",
    "injected",
    "injected_content",
)


async def sum_hours(url: str) -> float:
    """Fill ``execution_hours`` from the bulk-loaded log, as migration m006 does; seconds."""
    engine = create_engine(url)
    try:
        started = time.perf_counter()
        async with engine.begin() as connection:
            rows = await connection.run_sync(lambda c: backfill(c, executions, execution_hours))
        took = time.perf_counter() - started
        log(f"  execution_hours: {rows:,} rows in {took:.1f} s")
        return took
    finally:
        await engine.dispose()


BACKFILL: dict[str, float] = {}
"""Seconds each database took to sum the bulk-loaded log into execution_hours."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def records(count: int, now: datetime, seed: int) -> Iterator[tuple[Any, ...]]:
    """``count`` rows in :data:`COLUMNS` order, timestamps as aware datetimes."""
    rng = random.Random(seed)
    agents, agent_weights = zip(*AGENTS, strict=True)
    outcomes, outcome_weights = zip(*OUTCOMES, strict=True)
    action_weights = [1 / (i + 1) for i in range(len(ACTIONS))]  # Zipf-like
    medians = {a: 40 * 1.35**i for i, a in enumerate(ACTIONS)}  # 40 ms .. ~2.7 s
    span = 7 * 86400
    for i in range(count):
        # More traffic by day (UTC 8-20h) than by night: reject night seconds half the time.
        while True:
            back = rng.random() * span
            stamp = now - timedelta(seconds=back)
            if 8 <= stamp.hour < 20 or rng.random() < 0.5:
                break
        action = rng.choices(ACTIONS, action_weights)[0]
        outcome = rng.choices(outcomes, outcome_weights)[0]
        sent = outcome in ("success", "http_error", "timeout", "connect_error")
        if outcome == "timeout":
            duration = 10_000 + rng.random() * 50
        elif sent:
            duration = rng.lognormvariate(math.log(medians[action]), 0.6)
        else:
            duration = rng.random() * 2
        injected = outcome != "pending_confirmation" and rng.random() < (
            0.9 if outcome == "success" else 0.6
        )
        yield (
            f"{int(stamp.timestamp() * 1000):012x}7{secrets.token_hex(9)}"[:32],
            stamp,
            rng.choices(agents, agent_weights)[0],
            f"conv-{rng.randrange(200_000)}",
            action,
            f"call_{i}",
            '{"method": "GET", "url": "https://api.example.com/orders/A-1", "headers": {}}',
            '{"status_code": 200, "body": "{\\"status\\": \\"shipped\\"}", "truncated": false}'
            if sent
            else None,
            duration,
            outcome,
            None if outcome == "success" else rng.choice(ERRORS[outcome]),
            injected,
            '{"status": "shipped"}' if injected else None,
        )


def fill_sqlite(path: Path, count: int, now: datetime, seed: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        marks = ", ".join("?" * len(COLUMNS))
        sql = f"INSERT INTO executions ({', '.join(COLUMNS)}) VALUES ({marks})"
        batch: list[tuple[Any, ...]] = []
        for row in records(count, now, seed):
            # The gateway's SQLite format: UTC text that sorts chronologically.
            stamp = row[1].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            batch.append((*row[:1], stamp, *row[2:11], int(row[11]), row[12]))
            if len(batch) == 50_000:
                conn.executemany(sql, batch)
                batch.clear()
        conn.executemany(sql, batch)
        conn.commit()


async def fill_postgres(url: str, count: int, now: datetime, seed: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = records(count, now, seed)
        while chunk := [row for _, row in zip(range(100_000), rows, strict=False)]:
            await conn.copy_records_to_table("executions", records=chunk, columns=COLUMNS)
        # What autovacuum does soon after a bulk load: statistics and the visibility map.
        await conn.execute("VACUUM ANALYZE executions")
    finally:
        await conn.close()


async def time_overview(url: str, runs: int, now: datetime) -> list[dict[str, Any]]:
    engine = create_engine(url)
    rows = []
    try:
        for window in WINDOWS:
            for agent in (None, "sales"):
                await compute_overview(engine, window, agent=agent, now=now)  # warm-up
                times = []
                for _ in range(runs):
                    started = time.perf_counter()
                    stats = await compute_overview(engine, window, agent=agent, now=now)
                    times.append(time.perf_counter() - started)
                rows.append(
                    {
                        "window": window,
                        "agent": agent or "every agent",
                        "records": stats.totals.executions + stats.totals.pending,
                        "median_ms": statistics.median(times) * 1000,
                        "max_ms": max(times) * 1000,
                    }
                )
                log(f"  {window} {agent or 'all'}: {rows[-1]['median_ms']:.0f} ms")
    finally:
        await engine.dispose()
    return rows


async def bench_sqlite(work: Path, args: argparse.Namespace, now: datetime) -> list[Any]:
    path = work / "overview.db"
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    started = time.perf_counter()
    fill_sqlite(path, args.records, now, args.seed)
    log(f"sqlite: {args.records:,} records in {time.perf_counter() - started:.0f} s")
    BACKFILL["SQLite"] = await sum_hours(url)
    return await time_overview(url, args.runs, now)


async def bench_postgres(args: argparse.Namespace, now: datetime) -> list[Any]:
    import asyncpg

    name = f"ag_overview_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(args.pg, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = args.pg.rpartition("/")
    url = f"{base}/{name}"
    try:
        engine = create_engine(url)
        await migrate(engine)
        await engine.dispose()
        started = time.perf_counter()
        await fill_postgres(url, args.records, now, args.seed)
        log(f"postgres: {args.records:,} records in {time.perf_counter() - started:.0f} s")
        BACKFILL["PostgreSQL"] = await sum_hours(url)
        return await time_overview(url, args.runs, now)
    finally:
        admin = await asyncpg.connect(args.pg, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def render(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    command = " ".join([".venv/bin/python bench/bench_overview.py", *sys.argv[1:]])
    lines = [
        f"## Overview queries, {args.records:,} records over 7 days",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `{command}`,"
        f" median and slowest of {args.runs} runs after a warm-up",
        "",
        "| database | window | agent | records in window | median ms | slowest ms |",
        "|---|---|---|---:|---:|---:|",
    ]
    for db, rows in results.items():
        for r in rows:
            lines.append(
                f"| {db} | {r['window']} | {r['agent']} | {r['records']:,} |"
                f" {r['median_ms']:.0f} | {r['max_ms']:.0f} |"
            )
    lines.append("")
    for db, seconds in BACKFILL.items():
        lines.append(
            f"- {db}: summing the bulk-loaded log into `execution_hours` took {seconds:.1f} s"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per row")
    parser.add_argument("--db", choices=["both", "sqlite", "postgres"], default="both")
    parser.add_argument(
        "--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="server to use"
    )
    parser.add_argument("--seed", type=int, default=1)
    # scripts/dev.py bench passes the same options to every bench_*.py: ignore the others'.
    args, _unknown = parser.parse_known_args(argv)
    return args


async def main(args: argparse.Namespace) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="ag_overview_") as tmp:
        if args.db in ("both", "sqlite"):
            results["SQLite"] = await bench_sqlite(Path(tmp), args, now)
    if args.db in ("both", "postgres"):
        try:
            results["PostgreSQL"] = await bench_postgres(args, now)
        except OSError as e:  # no server: `scripts/dev.py bench` still gets the SQLite table
            if args.db == "postgres":
                raise
            log(f"postgres: skipped, {args.pg.rpartition('@')[2]} unreachable ({e})")
    print(render(results, args))


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
