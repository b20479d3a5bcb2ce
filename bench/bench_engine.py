"""The execution engine alone: what ``Executor.execute_action`` adds to a plain HTTP GET.

Setup, as in production (:func:`gateway.engine.runtime.open_runtime`) minus the config file: the
real
:class:`~gateway.net.outbound.Outbound` client with the real
:class:`~gateway.net.egress.EgressPolicy`
(``allow=["127.0.0.1"]``), and a real :class:`~gateway.stores.logs.LogStore` on SQLite in a temp
dir, so every execution is also rendered into a record, redacted and written in the background.
The executor keeps its default :mod:`gateway.engine.limits` (the per-action concurrency cap raised
to ``--concurrency`` if that is higher), and each execution comes from a conversation of its own.
The action is a GET with a ``{{lead.email}}`` query variable, a bearer secret and a
``response.select``; the model's arguments arrive as the JSON text ``"{}"``.

For each concurrency the same URL (same headers) is first fetched with a plain
``aiohttp.ClientSession`` (the baseline), then executed through the engine; the engine's cost
per execution is ``p50(execute_action) - p50(direct GET)`` (and the same for p99). The target API
runs in a separate process (see :mod:`harness` for placement). After the run the log is flushed
and its row count checked against the number of executions (warm-up included); a mismatch
exits with status 1.

    .venv/bin/python bench/bench_engine.py                      # ~20 s
    .venv/bin/python bench/bench_engine.py --duration 10 --concurrency 1 8 32
    .venv/bin/python bench/bench_engine.py --profile            # + a cProfile run, top gateway/
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from harness import (
    CUSTOMER_BODY,
    Phase,
    TargetServer,
    cpu_placement,
    describe_placement,
    markdown_table,
    pin_to_cpu,
    quietest,
    run_phase,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

import gateway
from gateway.definitions.actions import HttpAction
from gateway.definitions.config import parse_action
from gateway.engine.context import Conversation
from gateway.engine.executor import Executor
from gateway.engine.limits import Limits, LimitsConfig
from gateway.net.egress import EgressPolicy
from gateway.net.outbound import USER_AGENT, Outbound
from gateway.redaction import Redactor
from gateway.stores.db import executions, migrate
from gateway.stores.engines import create_engine
from gateway.stores.logs import LogStore, LogStoreStats

SECRETS = {"CRM_TOKEN": "crm-SECRET-4c1f8a0e9b7d"}
LEAD_EMAIL = "ada.lovelace+vip@example.com"
SELECT = "customer.{name: name, plan: plan, status: status, open_tickets: open_tickets}"


def build_action(base_url: str) -> HttpAction:
    """The benchmarked action: lead-email query variable, bearer secret, response.select."""
    action = parse_action(
        {
            "name": "Look up customer",
            "description": "Find the customer record for the lead's email address.",
            "url": base_url + "/customers?email={{lead.email}}",
            "auth": {"type": "bearer", "token": "{{secrets.CRM_TOKEN}}"},
            "response": {"select": SELECT},
        }
    )
    assert isinstance(action, HttpAction)
    return action


class Engine:
    """The executor and its action, counting every execution it is asked for.

    Each execution belongs to a conversation of its own, as when many customers chat at once:
    the executor's per-conversation rate limit (:mod:`gateway.engine.limits`) would otherwise refuse
    one benchmark conversation's calls after the first few dozen.
    """

    def __init__(self, executor: Executor, action: HttpAction) -> None:
        self.executor = executor
        self.action = action
        self.executions = 0
        self.content: str | None = None

    def conversation(self) -> Conversation:
        """A fresh conversation whose lead has an email address."""
        return Conversation(
            id=f"conv_bench_{self.executions}",
            agent_id="support",
            lead={"email": LEAD_EMAIL, "name": "Ada"},
            message="Can you check my account?",
        )

    async def execute(self) -> None:
        self.executions += 1
        result = await self.executor.execute_action(
            self.action, self.conversation(), "{}", tool_call_id="call_bench"
        )
        if result.outcome != "success":
            raise RuntimeError(f"execution ended {result.outcome}: {result.record.error}")
        self.content = result.content

    async def rendered_url(self) -> tuple[str, dict[str, str]]:
        """The URL and headers the engine sends (from a dry run, which logs nothing)."""
        dry = await self.executor.execute_action(
            self.action, self.conversation(), "{}", dry_run=True
        )
        headers = {
            "Authorization": f"Bearer {SECRETS['CRM_TOKEN']}",
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "gzip, deflate",
        }
        return dry.record.request["url"], headers


async def count_rows(db: AsyncEngine) -> int:
    """Rows in the executions table."""
    async with db.connect() as connection:
        result = await connection.execute(select(func.count()).select_from(executions))
        return int(result.scalar_one())


def print_profile(profile: cProfile.Profile, limit: int) -> None:
    """The gateway/ functions that cost most, by own time and by time including callees."""
    root = str(Path(gateway.__file__).resolve().parent) + os.sep
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    raw = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in raw.values())
    ours = [(key, value) for key, value in raw.items() if key[0].startswith(root)]
    for title, index in (("own time (tottime)", 2), ("including callees (cumtime)", 3)):
        ours.sort(key=lambda item: item[1][index], reverse=True)
        rows = [
            [
                f"`{key[0][len(root) :]}:{key[1]} {key[2]}`",
                value[1],
                value[2] * 1000,
                value[3] * 1000,
                100 * value[index] / total,
            ]
            for key, value in ours[:limit]
        ]
        print(f"\n### gateway/ functions by {title}; profiled CPU {total:.2f} s\n")
        print(markdown_table(["function", "calls", "tottime ms", "cumtime ms", "% of CPU"], rows))
    print(
        "\nCalls count coroutine resumptions. cProfile cannot follow SQLAlchemy's greenlet "
        "switches, so the cumtime of LogStore._run/_write_batch/_execute also counts whatever "
        "ran while a write was in flight; trust their tottime only."
    )


@dataclass
class Row:
    """One concurrency's results: the baseline, the engine, and the log's state after it."""

    direct: Phase
    engine: Phase
    log_backlog: int
    """Records still queued when the engine run ended."""
    flush_ms: float
    """How long the log store then took to store them."""
    failures: list[str] = field(default_factory=list)
    """The first error of every run (repeats included) that had failed calls."""


async def measure(
    args: argparse.Namespace,
    concurrency: int,
    engine: Engine,
    direct: Callable[[], Awaitable[None]],
    server: TargetServer,
) -> Row:
    """Direct GETs, then executions, ``args.repeat`` times; keep the least disturbed of each."""
    common: dict[str, Any] = {
        "concurrency": concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "server": server,
    }
    store = engine.executor.logstore
    assert store is not None
    rows: list[Row] = []
    for _ in range(args.repeat):
        base = await run_phase(direct, **common)
        executed = await run_phase(engine.execute, **common)
        backlog = store.stats()["queued"]
        flush_started = time.perf_counter()
        await store.flush()
        rows.append(Row(base, executed, backlog, (time.perf_counter() - flush_started) * 1000))
    best = quietest([row.engine for row in rows])
    row = next(row for row in rows if row.engine is best)
    row.direct = quietest([row.direct for row in rows])
    row.failures = [
        f"{name}, concurrency {concurrency}: {phase.first_error}"
        for r in rows
        for name, phase in (("direct GET", r.direct), ("execute_action", r.engine))
        if phase.first_error
    ]
    print(
        f"  concurrency {concurrency}: direct {row.direct.rate:,.0f} req/s, "
        f"engine {row.engine.rate:,.0f} exec/s",
        file=sys.stderr,
        flush=True,
    )
    return row


def print_tables(rows: list[Row]) -> None:
    """The latency table, then where the CPU went."""
    latency = [
        [
            r.engine.concurrency,
            r.engine.rate,
            r.direct.rate,
            r.engine.p_ms(50),
            r.direct.p_ms(50),
            r.engine.p_ms(50) - r.direct.p_ms(50),
            r.engine.p_ms(99),
            r.direct.p_ms(99),
            r.engine.p_ms(99) - r.direct.p_ms(99),
            r.engine.errors + r.direct.errors,
        ]
        for r in rows
    ]
    print(
        markdown_table(
            [
                "concurrency",
                "exec/s",
                "direct GET req/s",
                "exec p50 ms",
                "direct p50 ms",
                "**added p50 ms**",
                "exec p99 ms",
                "direct p99 ms",
                "**added p99 ms**",
                "errors",
            ],
            latency,
        )
    )
    cpu = [
        [
            r.engine.concurrency,
            r.engine.client_cpu_us_per_call,
            r.direct.client_cpu_us_per_call,
            r.engine.client_cpu_us_per_call - r.direct.client_cpu_us_per_call,
            r.engine.client_cpu_pct,
            r.engine.server_cpu_pct,
            r.engine.other_cpu_pct,
            r.log_backlog,
            r.flush_ms,
        ]
        for r in rows
    ]
    print()
    print(
        markdown_table(
            [
                "concurrency",
                "CPU µs/exec",
                "direct CPU µs/req",
                "added CPU µs",
                "bench CPU % (exec)",
                "server CPU % (exec)",
                "other CPU % (exec)",
                "log queued at end",
                "log flush ms",
            ],
            cpu,
        )
    )


async def run(args: argparse.Namespace, server: TargetServer) -> int:
    """Measure; print the tables and the log store's stats. Returns the exit status."""
    with tempfile.TemporaryDirectory(prefix="actiongate-bench-") as tmp:
        db = create_engine(f"sqlite:///{Path(tmp) / 'log.db'}")
        await migrate(db)
        redactor = Redactor(SECRETS.values())
        store = LogStore(db, redactor)
        await store.start()
        outbound = Outbound(EgressPolicy(["127.0.0.1"]))
        # The default limits, with room for every worker should --concurrency exceed the cap.
        cap = max(LimitsConfig().concurrency, *args.concurrency)
        limits = Limits(LimitsConfig(concurrency=cap))
        executor = Executor(
            outbound, secrets=SECRETS, logstore=store, redactor=redactor, limits=limits
        )
        engine = Engine(executor, build_action(server.base_url))
        url, headers = await engine.rendered_url()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), trust_env=False, auto_decompress=False
        )

        async def direct() -> None:
            async with session.get(url, headers=headers) as response:
                body = await response.read()
            if response.status != 200 or body != CUSTOMER_BODY:
                raise RuntimeError(f"direct GET: HTTP {response.status}")

        profile: cProfile.Profile | None = None
        try:
            rows = [await measure(args, c, engine, direct, server) for c in args.concurrency]
            if args.profile:
                profile = cProfile.Profile()
                profile.enable()
                await run_phase(
                    engine.execute,
                    concurrency=max(args.concurrency),
                    duration_s=args.duration,
                    warmup_s=0,
                )
                profile.disable()
        finally:
            await session.close()
            await outbound.close()
            await store.flush()
            stats: LogStoreStats = store.stats()
            stored = await count_rows(db)
            await store.close()
            await db.dispose()

    print_tables(rows)
    ok = stored == engine.executions == stats["written"] and stats["dropped"] == 0
    print(
        f"\nLog store after the run: {dict(stats)}; rows in `executions`: {stored}; "
        f"executions (warm-up{' and profile' if args.profile else ''} runs included): "
        f"{engine.executions} -> {'OK, every execution stored' if ok else 'MISMATCH'}"
    )
    print(f"\nWhat the model was given (last execution): {engine.content!r}")
    failures = [failure for r in rows for failure in r.failures]
    if failures:
        print("\nFailed calls (first error of each failing run):")
        print("\n".join(f"- {failure}" for failure in failures))
    if profile is not None:
        print_profile(profile, args.top)
    return 0 if ok and not failures else 1


def main(argv: list[str] | None = None) -> None:
    """Parse options, start the target API, measure, print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="discarded seconds per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile one more engine run (max concurrency) with cProfile",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per row; the one least disturbed by other processes is reported",
    )
    parser.add_argument("--top", type=int, default=12, help="gateway/ functions to list")
    args = parser.parse_args(argv)

    client_cpu, server_cpu = cpu_placement()
    pin_to_cpu(client_cpu)
    print("## Execution engine: `Executor.execute_action` vs a direct aiohttp GET, 127.0.0.1\n")
    print(f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"- command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"- Python {platform.python_version()}; log store: SQLite (WAL) in a temp dir")
    print(f"- {describe_placement(client_cpu, server_cpu)}")
    print(
        f"- {args.warmup:g} s warm-up + {args.duration:g} s measured per run; {args.repeat} "
        "run(s) per row, the least disturbed reported (see other CPU %)\n",
        flush=True,
    )
    with TargetServer(cpu=server_cpu, token=SECRETS["CRM_TOKEN"]) as server:
        status = asyncio.run(run(args, server))
    sys.exit(status)


if __name__ == "__main__":
    main()
