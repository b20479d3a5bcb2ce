"""Shared parts of the benchmarks: a target API in its own process, a closed-loop load driver,
percentiles and Markdown tables.

Placement: on a small machine the load generator and the target API would otherwise fight for
the same cores and each would distort the other. The target API is a minimal ``aiohttp.web``
server started in a separate process (``multiprocessing``, spawn), and when at least two CPUs
are available the server is pinned to one of them and the benchmark process to another
(``os.sched_setaffinity``). Each phase also reports both processes' CPU use, so a saturated
server (the server, not the client, being the limit) shows in the table.

The load is closed-loop: ``concurrency`` workers each send a request, wait for the whole
response, and send the next, for a warm-up (discarded) and then a measured window. Everything
stays on 127.0.0.1, and the server process stops when the benchmark closes its pipe (or exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import TracebackType

from aiohttp import web

__all__ = [
    "CUSTOMER_BODY",
    "ITEM_BODY",
    "Phase",
    "TargetServer",
    "cpu_placement",
    "describe_placement",
    "machine_busy_seconds",
    "markdown_table",
    "percentile",
    "pin_to_cpu",
    "quietest",
    "run_phase",
]

ITEM_BODY = json.dumps(
    {
        "id": "cus_8f14e45fceea167a5a36dedd4bea2543",
        "email": "ada.lovelace@example.com",
        "name": "Ada Lovelace",
        "plan": "enterprise",
        "status": "active",
        "open_tickets": 2,
        "created_at": "2024-03-18T09:21:44Z",
        "tags": ["vip", "beta", "eu-west"],
        "address": {"city": "London", "country": "GB", "postcode": "SW1A 1AA"},
        "lifetime_value_cents": 1289900,
    },
    separators=(",", ":"),
).encode()
"""The ~300-byte JSON document the target API answers with."""

CUSTOMER_BODY = json.dumps(
    {"customer": json.loads(ITEM_BODY), "request_id": "req_2c9f1d"}, separators=(",", ":")
).encode()


# --- CPU placement ---------------------------------------------------------------------------


def cpu_placement() -> tuple[int | None, int | None]:
    """CPUs for ``(benchmark process, server process)``; Nones when pinning is not possible."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[-1]


def pin_to_cpu(cpu: int | None) -> None:
    """Restrict this process to one CPU (no-op for None)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def describe_placement(client_cpu: int | None, server_cpu: int | None) -> str:
    """One line saying where the benchmark and the server run."""
    if client_cpu is None or server_cpu is None:
        return "placement: not pinned (fewer than 2 CPUs available); server in its own process"
    return (
        f"placement: benchmark process pinned to CPU {client_cpu}, target API server "
        f"(separate process, aiohttp.web, access log off) pinned to CPU {server_cpu}"
    )


def _process_cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds used so far by process ``pid`` (Linux ``/proc``; else None)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may contain spaces; the fields after its closing paren are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes on the machine have used (Linux ``/proc/stat``; else None)."""
    try:
        with open("/proc/stat") as f:
            total = f.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    busy = sum(int(total[i]) for i in (1, 2, 3, 6, 7, 8))
    return busy / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU seconds every process on the machine has used so far (Linux; else None)."""
    return _machine_busy_seconds()


# --- the target API -----------------------------------------------------------------------------


def _build_app(token: str) -> web.Application:
    expected = f"Bearer {token}"

    async def item(request: web.Request) -> web.Response:
        return web.Response(body=ITEM_BODY, content_type="application/json")

    async def customers(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_token"}, status=401)
        if "@" not in request.query.get("email", ""):
            return web.json_response({"error": "email required"}, status=400)
        return web.Response(body=CUSTOMER_BODY, content_type="application/json")

    app = web.Application()
    app.router.add_get("/item", item)
    app.router.add_get("/customers", customers)
    return app


async def _serve_async(conn: Connection, token: str) -> None:
    runner = web.AppRunner(_build_app(token), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wait_for_parent() -> None:
        # Any message, or EOF when the parent closed the pipe or died, stops the server.
        with contextlib.suppress(EOFError, OSError):
            conn.recv()
        loop.call_soon_threadsafe(stop.set)

    conn.send(port)
    threading.Thread(target=wait_for_parent, daemon=True).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _serve(conn: Connection, cpu: int | None, token: str) -> None:
    pin_to_cpu(cpu)
    asyncio.run(_serve_async(conn, token))


@dataclass
class TargetServer:
    """The target API in a separate process; use as a context manager.

    Routes: ``GET /item`` (the ~300-byte JSON document) and ``GET /customers?email=..``
    (the same customer wrapped in an object, 401 unless ``Authorization: Bearer <token>``).
    """

    cpu: int | None = None
    token: str = "bench-token"
    base_url: str = ""
    _process: multiprocessing.process.BaseProcess | None = field(default=None, repr=False)
    _conn: Connection | None = field(default=None, repr=False)

    def __enter__(self) -> TargetServer:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(child, self.cpu, self.token), daemon=True)
        process.start()
        child.close()
        self._process, self._conn = process, parent
        if not parent.poll(30):
            self.__exit__(None, None, None)
            raise RuntimeError("the target API did not start within 30 s")
        self.base_url = f"http://127.0.0.1:{parent.recv()}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send("stop")
            self._conn.close()
        if self._process is not None:
            self._process.join(5)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5)

    def cpu_seconds(self) -> float | None:
        """CPU seconds the server process has used so far (None when unknown)."""
        if self._process is None or self._process.pid is None:
            return None
        return _process_cpu_seconds(self._process.pid)


# --- load ---------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Phase:
    """What one measured window produced."""

    concurrency: int
    elapsed_s: float
    latencies_s: list[float]
    errors: int
    calls: int
    """Calls started, warm-up included (each one completed, successfully or not)."""
    client_cpu_s: float
    server_cpu_s: float | None
    other_cpu_s: float | None = None
    """CPU used meanwhile by every other process on the machine (noise; None when unknown)."""
    first_error: str | None = None
    """The first failed call's exception, as text."""

    def __post_init__(self) -> None:
        self.latencies_s.sort()

    @property
    def completed(self) -> int:
        """Successful calls in the measured window."""
        return len(self.latencies_s)

    @property
    def rate(self) -> float:
        """Successful calls per second."""
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else math.nan

    def p_ms(self, pct: float) -> float:
        """A latency percentile in milliseconds."""
        return percentile(self.latencies_s, pct) * 1000

    @property
    def client_cpu_pct(self) -> float:
        """The benchmark process's CPU use, in % of one core."""
        return 100 * self.client_cpu_s / self.elapsed_s

    @property
    def server_cpu_pct(self) -> float | None:
        """The server process's CPU use, in % of one core (None when unknown)."""
        return None if self.server_cpu_s is None else 100 * self.server_cpu_s / self.elapsed_s

    @property
    def other_cpu_pct(self) -> float | None:
        """Other processes' CPU use during the window, in % of one core (None when unknown)."""
        return None if self.other_cpu_s is None else 100 * self.other_cpu_s / self.elapsed_s

    @property
    def client_cpu_us_per_call(self) -> float:
        """Benchmark-process CPU microseconds per successful call."""
        return 1e6 * self.client_cpu_s / self.completed if self.completed else math.nan


async def _drive(
    call: Callable[[], Awaitable[object]], concurrency: int, duration_s: float
) -> tuple[list[float], int, int, str | None]:
    latencies: list[float] = []
    errors = calls = 0
    first_error: str | None = None
    end = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal errors, calls, first_error
        while (started := time.perf_counter()) < end:
            calls += 1
            try:
                await call()
            except Exception as e:
                errors += 1
                first_error = first_error or f"{type(e).__name__}: {e}"
                continue
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, calls, first_error


async def run_phase(
    call: Callable[[], Awaitable[object]],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    server: TargetServer | None = None,
) -> Phase:
    """Run ``call`` from ``concurrency`` workers: a discarded warm-up, then the measured window.

    A call that raises counts as an error (the measured window's, see ``Phase.errors``) and is
    left out of the latencies and the rate; the first failure of either window is kept as text.
    """
    _, _, warm_calls, warm_error = await _drive(call, concurrency, warmup_s)
    server_before = server.cpu_seconds() if server else None
    machine_before = _machine_busy_seconds()
    cpu_before = time.process_time()
    started = time.perf_counter()
    latencies, errors, calls, first_error = await _drive(call, concurrency, duration_s)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    server_after = server.cpu_seconds() if server else None
    machine_after = _machine_busy_seconds()
    server_cpu = (
        None if server_before is None or server_after is None else server_after - server_before
    )
    other_cpu = None
    if machine_before is not None and machine_after is not None:
        # Clock-tick counters: clamp the rounding error at zero.
        other_cpu = max(0.0, machine_after - machine_before - cpu - (server_cpu or 0.0))
    return Phase(
        concurrency,
        elapsed,
        latencies,
        errors,
        warm_calls + calls,
        cpu,
        server_cpu,
        other_cpu,
        warm_error or first_error,
    )


def quietest(phases: Sequence[Phase]) -> Phase:
    """Of repeated runs, the one other processes disturbed least (the first when unknown)."""
    return min(phases, key=lambda p: math.inf if p.other_cpu_s is None else p.other_cpu_s)


# --- output -------------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned."""

    def cell(value: object) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            if math.isnan(value):
                return "n/a"
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
        return str(value)

    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) for r in rows) for i in range(len(headers))
    ]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
