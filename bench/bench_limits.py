"""What ``limits.redis`` adds to each action call: one ``acquire`` plus one ``release``.

Each row is a closed loop of ``concurrency`` tasks, each taking a permit (in one of 1,000
conversations, in turn) and releasing it at once (a success), for ``--duration`` seconds after
a warm-up. Rows: the per-process :class:`~gateway.engine.limits.Limits`; :class:`RedisLimits` on
the Redis at ``--redis`` (two Lua scripts, two round trips); and two plain ``PING`` round trips
on the same client, the floor any shared limit pays. Keys go under a fresh prefix, deleted
afterwards. ``--repeat N`` reports the least disturbed of N runs per row (fewest cycles that
fell back to the process because Redis did not answer within 0.25 s, then lowest p50).

    .venv/bin/python bench/bench_limits.py                        # ~12 s
    .venv/bin/python bench/bench_limits.py --redis redis://127.0.0.1:6379/0 --concurrency 1 32
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.definitions.config import LimitsConfig
from gateway.engine.limits import ActionLimits, Limits, Permit
from gateway.engine.redis_limits import RedisLimits

Call = Callable[[int], Awaitable[None]]


FALLBACKS = [0]


def permit_cycle(limits: ActionLimits) -> Call:
    """One call's permit, in one of 1,000 conversations (each sees a few calls a minute)."""
    count = 0

    async def cycle(worker: int) -> None:
        nonlocal count
        count += 1
        permit = await limits.acquire("bench", f"bench\x00{count % 1000}")
        assert isinstance(permit, Permit), permit
        if permit.lease is None and isinstance(limits, RedisLimits):
            FALLBACKS[0] += 1  # Redis did not answer in time: this cycle measured the fallback
        await limits.release(permit, failed=False)

    return cycle


async def measure(call: Call, concurrency: int, warmup: float, duration: float) -> list[float]:
    samples: list[float] = []
    start = time.perf_counter()
    measured_from, stop = start + warmup, start + warmup + duration

    async def worker(index: int) -> None:
        while (now := time.perf_counter()) < stop:
            await call(index)
            if now >= measured_from:
                samples.append(time.perf_counter() - now)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return samples


def row(name: str, concurrency: int, samples: list[float], duration: float, fell: int) -> str:
    samples.sort()
    p50 = statistics.median(samples) * 1e6
    p99 = samples[int(len(samples) * 0.99)] * 1e6
    rate = len(samples) / duration
    return f"| {name} | {concurrency} | {rate:,.0f} | {p50:,.0f} | {p99:,.0f} | {fell} |"


async def main(args: argparse.Namespace) -> None:
    prefix = f"actiongate-bench:{uuid.uuid4().hex[:8]}:"
    config = LimitsConfig(rate=100_000, per_s=60, concurrency=10_000)
    shared = RedisLimits(config.model_copy(update={"redis": args.redis, "redis_prefix": prefix}))
    client = shared._redis

    async def pings(_: int) -> None:
        await client.ping()
        await client.ping()

    rows = [
        "| limits | concurrency | cycles/s | p50 µs | p99 µs | fallbacks |",
        "|---|---|---|---|---|---|",
    ]
    try:
        for concurrency in args.concurrency:
            for name, call in (
                ("per process (`Limits`)", permit_cycle(Limits(config))),
                ("`limits.redis` (`RedisLimits`)", permit_cycle(shared)),
                ("2 Redis `PING`s (floor)", pings),
            ):
                runs = []
                for _ in range(args.repeat):
                    FALLBACKS[0] = 0
                    samples = await measure(call, concurrency, args.warmup, args.duration)
                    runs.append((FALLBACKS[0], statistics.median(samples), samples))
                fell, _, samples = min(runs, key=lambda run: run[:2])  # the least disturbed run
                rows.append(row(name, concurrency, samples, args.duration, fell))
                print(rows[-1], file=sys.stderr)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await shared.close()
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=1.5)
    parser.add_argument("--repeat", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
