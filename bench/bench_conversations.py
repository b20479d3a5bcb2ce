"""Saving conversation state on a SQLite file: what the versioned merge costs per save.

Three ways to save one turn's state (a lead, a pending form, a stored result) on a file database
in a temp dir, each ``--saves`` times per round, rounds alternating so machine noise hits all:

* ``whole-state upsert``: the save before versions (``INSERT .. ON CONFLICT DO UPDATE`` of the
  whole state; the last write wins), the baseline;
* ``versioned, no conflict``: :meth:`ConversationStore.update` when nobody wrote in between
  (one compare-and-set ``UPDATE``), the common case;
* ``versioned, conflict``: every save starts from a stale row, so the compare-and-set misses
  and the locked read-merge-write follows.

Wall time is per save (min and median over rounds); CPU time covers the driver's thread too.

    .venv/bin/python bench/bench_conversations.py                # ~5 s
    .venv/bin/python bench/bench_conversations.py --saves 500 --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.stores.conversations import ConversationStore, StateChange
from gateway.stores.db import conversations, migrate
from gateway.stores.engines import create_engine, upsert_statement

STATE: dict[str, Any] = {
    "lead": {"email": "jo@example.com", "name": "Jo"},
    "user_id": "u-1",
    "channel": "web",
    "pending": {"call_1": {"kind": "form", "tool": "return_request"}},
    "results": {"call_0": {"content": "x" * 200}},
}


async def _savers(path: Path) -> tuple[dict[str, Callable[[int], Awaitable[None]]], Any]:
    engine = create_engine(f"sqlite:///{path}")
    await migrate(engine)
    store = ConversationStore(engine)
    upsert = upsert_statement(conversations, engine.dialect)
    seen = {"fresh": await store.save("c-fresh", "a", STATE)}
    stale = await store.save("c-stale", "a", STATE)

    async def whole(i: int) -> None:
        state = {**STATE, "lead": {**STATE["lead"], "n": str(i)}}
        now = datetime.now(UTC)
        row = {"id": "c-whole", "agent_id": "a", "state": orjson.dumps(state).decode()}
        row.update(version=1, created_at=now, updated_at=now)
        async with engine.begin() as conn:
            await conn.execute(upsert, [row])

    async def versioned(i: int) -> None:
        state = {**STATE, "lead": {**STATE["lead"], "n": str(i)}}
        since = seen["fresh"]
        change = StateChange.between(since.state, state)
        seen["fresh"] = await store.update("c-fresh", "a", change, since)

    async def conflicting(i: int) -> None:
        state = {**STATE, "lead": {**STATE["lead"], "n": str(i)}}
        await store.update("c-stale", "a", StateChange.between(STATE, state), stale)

    savers = {
        "whole-state upsert": whole,
        "versioned, no conflict": versioned,
        "versioned, conflict": conflicting,
    }
    return savers, engine


async def main(saves: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        savers, engine = await _savers(Path(directory) / "bench.db")
        wall: dict[str, list[float]] = {name: [] for name in savers}
        cpu: dict[str, list[float]] = {name: [] for name in savers}
        for round_no in range(rounds):
            order = list(savers.items())
            for name, save in order[round_no % len(order) :] + order[: round_no % len(order)]:
                started, cpu_started = time.perf_counter(), time.process_time()
                for i in range(saves):
                    await save(i)
                wall[name].append((time.perf_counter() - started) / saves * 1e6)
                cpu[name].append((time.process_time() - cpu_started) / saves * 1e6)
        await engine.dispose()
    print("| save | wall min µs | wall median µs | CPU median µs |")
    print("|---|---:|---:|---:|")
    for name in savers:
        print(
            f"| {name} | {min(wall[name]):.0f} | {statistics.median(wall[name]):.0f} "
            f"| {statistics.median(cpu[name]):.0f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=200, help="saves per round and way")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main(args.saves, args.rounds))
