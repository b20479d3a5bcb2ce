"""The execution log writer under a flood: how many records per second does it store?

A producer on the event loop submits records to a :class:`~gateway.stores.logs.LogStore` for
``--seconds``, either as fast as it can (``--rate 0``, the default: the writer's capacity) or
paced at ``--rate`` records/s (does the writer keep up with that rate?). Each record is shaped
like a real one and, like a real one, is submitted twice: once when the call finishes and
again with ``injected`` set when its result reaches the model (the upsert of the same ``id``).

* ``refusal``: a rate-limited call (``outcome=rejected``, no response, a short error and the
  message the model read), the flood of issue 18;
* ``execution``: a completed call with a JSON request body and a ~600-byte response body.

The database is a SQLite file in WAL mode in a temp dir (``--db sqlite``), or PostgreSQL at
``--pg-url`` (``--db postgres``; the ``executions`` table is emptied first). Reported per run:
records stored per second over the window, drops, the buffer's high-water mark, the process's
CPU time per stored record (event loop and the driver's thread together), the producer's share
apart (building and submitting a record), the writer's CPU per stored record on the event
loop's thread and on the driver's, the capacity those give with a free core for each thread
(1e6 / the larger of producer + writer loop and driver), the time ``close()`` takes to store
what is still queued, whether the table holds exactly one row per record, and the CPU other
processes used meanwhile (this machine is shared; ``--repeat N`` keeps the least disturbed of
N runs). ``--profile`` adds a cProfile top
of the event loop's thread (slower overall; the driver's thread is not in it, use py-spy).

    .venv/bin/python bench/bench_logstore.py                          # ~15 s, both shapes
    .venv/bin/python bench/bench_logstore.py --rate 50000 --seconds 10 --shape refusal
    .venv/bin/python bench/bench_logstore.py --db postgres --pg-url postgresql://postgres@127.0.0.1/test
    .venv/bin/python bench/bench_logstore.py --shape refusal --profile --top 25

Exit status 1 when a record went missing without being counted as dropped, or a row is
duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import io
import logging
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import machine_busy_seconds
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.redaction import Redactor
from gateway.stores.db import executions, migrate
from gateway.stores.engines import create_engine
from gateway.stores.logs import ExecutionRecord, LogStore, new_record

_ERROR = "rate limit exceeded for get_customer_account: 10 calls per 60 s (retry in 41 s)"
_REFUSAL_CONTENT = (
    '{"error": "get_customer_account was not called: rate limit exceeded for '
    'get_customer_account: 10 calls per 60 s (retry in 41 s). Do not retry now."}'
)
_RESPONSE_BODY = (
    '{"customer":{"id":"cus_8f14e45fceea167a5a36dedd4bea2543","email":"ada.lovelace@example.com",'
    '"name":"Ada Lovelace","plan":"enterprise","status":"active","open_tickets":2,'
    '"created_at":"2024-03-18T09:21:44Z","tags":["vip","beta","eu-west"],"address":{"city":'
    '"London","country":"GB","postcode":"SW1A 1AA"},"lifetime_value_cents":1289900,'
    '"orders":[{"id":"ord_1","total_cents":4999,"status":"shipped"},{"id":"ord_2",'
    '"total_cents":12900,"status":"processing"}]},"request_id":"req_2c9f1d"}'
)


def refusal(index: int) -> ExecutionRecord:
    """A rate-limited call, as ``Executor`` records it."""
    return new_record(
        action="get_customer_account",
        outcome="rejected",
        agent_id="support",
        conversation_id=f"conv-{index % 500}",
        tool_call_id=f"call_{index:08d}",
        request={
            "method": "GET",
            "url": f"https://api.example.com/v1/customers?email=user{index % 500}%40example.com",
            "headers": {"Accept": "application/json", "Authorization": "[REDACTED]"},
            "body": None,
        },
        duration_ms=0.042,
        error=_ERROR,
    )


def execution(index: int) -> ExecutionRecord:
    """A completed call with request and response bodies."""
    return new_record(
        action="create_return_request",
        outcome="success",
        agent_id="support",
        conversation_id=f"conv-{index % 500}",
        tool_call_id=f"call_{index:08d}",
        request={
            "method": "POST",
            "url": "https://api.example.com/v1/returns",
            "headers": {
                "Accept": "application/json",
                "Authorization": "[REDACTED]",
                "Content-Type": "application/json",
            },
            "body": (
                f'{{"order_id":"ord_{index}","reason":"damaged on arrival","items":'
                '[{"sku":"SKU-1234","qty":1}],"email":"ada.lovelace@example.com"}'
            ),
        },
        response={"status_code": 200, "body": _RESPONSE_BODY, "truncated": False},
        duration_ms=183.4,
    )


SHAPES: dict[str, Callable[[int], ExecutionRecord]] = {"refusal": refusal, "execution": execution}


@dataclass
class Result:
    shape: str
    offered: float  # records/s submitted over the window
    stored: float  # records/s stored over the window
    records: int
    dropped: int
    high_water: int  # most records waiting in memory
    spill_high_water: int  # most records waiting in the spill file
    cpu_us: float  # process CPU per stored record, µs
    producer_us: float  # of which building and submitting a record, µs
    writer_us: float  # the writer's part on the event loop's thread, per stored record, µs
    driver_us: float  # on other threads (the SQLite driver's), per stored record, µs
    drain_s: float
    rows_ok: bool
    cpu_pct: float  # this process, % of one core, over the window and the drain
    other_pct: float | None  # every other process on the machine meanwhile, % of one core


def _cpu() -> float:
    return time.process_time()  # every thread of the process: the loop and the driver's


def _producer_cost(engine: AsyncEngine, make: Callable[[int], ExecutionRecord]) -> float:
    """CPU µs to build a record and submit both its versions, the writer not running (timed
    apart: reading a thread's CPU clock costs microseconds here, too much to do per step)."""
    store = LogStore(engine, max_buffer=1_000_000)
    count = 20_000
    started = time.thread_time()
    for index in range(count):
        record = make(index)
        store.submit(record)
        store.submit(dataclasses.replace(record, injected=True, injected_content=_REFUSAL_CONTENT))
    return (time.thread_time() - started) / count * 1e6


async def _run(
    engine: AsyncEngine,
    shape: str,
    seconds: float,
    rate: float,
    max_buffer: int,
    spill: Path | None,
) -> Result:
    make = SHAPES[shape]
    redactor = Redactor(["sk_live_51H8bench_not_a_real_key"])
    options: dict[str, Any] = {"max_buffer": max_buffer}
    if spill is not None:
        options["spill_path"] = spill
    store = LogStore(engine, redactor, **options)
    await store.start()
    loop = asyncio.get_running_loop()
    index = high_water = spill_high_water = 0
    # A flood comes from many request tasks, each submitting its record and yielding: so
    # submit a few records per step, and let the loop (the writer among others) run between.
    step = 20
    cpu_started, machine_started = _cpu(), machine_busy_seconds()
    loop_cpu_started = time.thread_time()
    started = loop.time()
    deadline = started + seconds
    while (now := loop.time()) < deadline:
        due = step if rate <= 0 else min(int((now - started) * rate) - index, step)
        for _ in range(due):
            record = make(index)
            store.submit(record)
            store.submit(
                dataclasses.replace(record, injected=True, injected_content=_REFUSAL_CONTENT)
            )
            index += 1
        stats = store.stats()
        high_water = max(high_water, stats["queued"] - stats.get("spilled", 0))
        spill_high_water = max(spill_high_water, stats.get("spilled", 0))
        # Paced and on schedule: wait for the next millisecond; otherwise just yield.
        await asyncio.sleep(0.001 if rate > 0 and due < step else 0)
    window = loop.time() - started
    written_in_window = store.stats()["written"]
    drain_started = time.perf_counter()
    await store.close(timeout_s=None)
    drain_s = time.perf_counter() - drain_started
    cpu = _cpu() - cpu_started
    loop_cpu = time.thread_time() - loop_cpu_started
    machine = machine_busy_seconds()
    elapsed = loop.time() - started
    other = None
    if machine is not None and machine_started is not None:
        other = max(0.0, (machine - machine_started - cpu) / elapsed * 100)
    producer_us = _producer_cost(engine, make)  # after the measured part: not counted in it
    stats = store.stats()
    async with engine.connect() as connection:
        rows = await connection.scalar(select(func.count()).select_from(executions))
        injected = await connection.scalar(
            select(func.count()).select_from(executions).where(executions.c.injected)
        )
    stored_records = index - stats["dropped"]
    # Both submissions of a record usually merge in the buffer, so `written` counts rows
    # written (1 or 2 per record); the table must hold one row per record not dropped.
    rows_ok = rows == stored_records and injected == rows
    return Result(
        shape=shape,
        offered=index / window,
        # Records whose final version was stored within the window, per second.
        stored=min(written_in_window, stored_records) / window,
        records=index,
        dropped=stats["dropped"],
        high_water=high_water,
        spill_high_water=spill_high_water,
        cpu_us=cpu / max(1, stored_records) * 1e6,
        producer_us=producer_us,
        # The loop's CPU less the producer's (calibrated) share: what storing a record costs there.
        writer_us=max(0.0, loop_cpu - producer_us * index / 1e6) / max(1, stored_records) * 1e6,
        driver_us=(cpu - loop_cpu) / max(1, stored_records) * 1e6,
        drain_s=drain_s,
        rows_ok=rows_ok,
        cpu_pct=cpu / elapsed * 100,
        other_pct=other,
    )


async def _engine(db: str, pg_url: str, directory: Path, shape: str) -> AsyncEngine:
    if db == "postgres":
        engine = create_engine(pg_url)
        await migrate(engine)
        async with engine.begin() as connection:
            await connection.execute(delete(executions))
        return engine
    engine = create_engine(f"sqlite:///{directory / f'{shape}.db'}")
    await migrate(engine)
    return engine


async def main(args: argparse.Namespace) -> int:
    # One warning per thousand drops would bury the table; drops are counted in it instead.
    logging.getLogger("actiongate.logs").setLevel(logging.ERROR)
    results: list[Result] = []
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as directory:
        for shape in args.shape:
            engine = await _engine(args.db, args.pg_url, Path(directory), shape)
            print(f"{shape}: {args.seconds:g} s on {args.db} ...", file=sys.stderr)
            if profiler is not None:
                profiler.enable()
            spill = Path(directory) / f"{shape}.spill.jsonl" if args.spill else None
            runs: list[Result] = []
            try:
                for _ in range(args.repeat):
                    run = _run(engine, shape, args.seconds, args.rate, args.max_buffer, spill)
                    runs.append(await run)
                    async with engine.begin() as connection:
                        await connection.execute(delete(executions))
            finally:
                if profiler is not None:
                    profiler.disable()
                await engine.dispose()
            # Other sessions share this machine: report the run they disturbed least.
            results.append(min(runs, key=lambda r: r.other_pct or 0.0))
    rate = "full speed" if args.rate <= 0 else f"{args.rate:,.0f} records/s"
    spilling = "with a spill file" if args.spill else "no spill file"
    print(
        f"\n{args.db}, offered {rate}, {args.seconds:g} s, max_buffer {args.max_buffer:,}, "
        f"{spilling}\n"
    )
    print(
        "| shape | offered rec/s | stored rec/s | records | dropped | buffer high-water "
        "| spill high-water "
        "| CPU µs/rec | producer µs/rec | writer loop µs/rec | driver µs/rec | capacity rec/s "
        "| drain at close s | CPU % | other CPU % | rows ok |"
    )
    print("|---|" + "---:|" * 14 + "---|")
    for r in results:
        print(
            f"| {r.shape} | {r.offered:,.0f} | {r.stored:,.0f} | {r.records:,} | {r.dropped:,} "
            f"| {r.high_water:,} | {r.spill_high_water:,} | {r.cpu_us:.1f} "
            f"| {r.producer_us:.1f} | {r.writer_us:.1f} | {r.driver_us:.1f} "
            f"| {1e6 / max(r.producer_us + r.writer_us, r.driver_us, 0.001):,.0f} "
            f"| {r.drain_s:.2f} "
            f"| {r.cpu_pct:.0f} | {'?' if r.other_pct is None else f'{r.other_pct:.0f}'} "
            f"| {'yes' if r.rows_ok else 'NO'} |"
        )
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats(args.sort)
        stats.print_stats(args.top)
        print("\n```\n" + out.getvalue().strip() + "\n```")
    return 0 if all(r.rows_ok for r in results) else 1


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per shape")
    parser.add_argument("--rate", type=float, default=0, help="records/s offered; 0: flat out")
    parser.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--max-buffer", type=int, default=10_000)
    parser.add_argument("--spill", action="store_true", help="give the store a spill file")
    parser.add_argument("--repeat", type=int, default=1, help="runs per shape; the quietest wins")
    parser.add_argument("--profile", action="store_true", help="cProfile the runs")
    parser.add_argument("--top", type=int, default=20, help="profile rows printed")
    parser.add_argument("--sort", default="tottime", help="profile sort key")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(_parse())))
