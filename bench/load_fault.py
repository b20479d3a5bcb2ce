"""Load with faults: hundreds of conversations against failing APIs, then SIGTERM, then an audit.

Everything runs on 127.0.0.1, each server in a process of its own:

- a **faulty action API** (aiohttp; ``--serve faulty``) whose endpoint decides the behaviour:
  ``/ok`` answers at once, ``/timeout`` sleeps past the action's ``timeout_s``, ``/error``
  answers 500 or 503, ``/reset`` resets the connection (``SO_LINGER`` 0, then abort), ``/drip``
  sends its body one byte at a time, ``/flaky`` picks one of those per request;
- **scripted upstreams** (``examples.scripted_upstream`` in fixed mode; ``--serve upstreams``):
  the gateway does not pass client headers such as ``X-Mock-Tool`` on to the upstream, so each
  action gets an agent of its own whose upstream always calls that action (``fixed_tool``), plus
  a ``troubled`` agent whose upstream's queue this script keeps stocked with 500 errors, slow
  streams, streams that break off, replies slower than the agent's upstream timeout, and tool
  calls;
- one or two ``actiongate serve`` processes (``--workers N`` each) on the same database: a
  SQLite file for one replica, a fresh PostgreSQL database (``ag_load_<random>``, dropped at
  the end) for two; with ``--redis URL`` the limits are shared through that Redis database
  (flushed first);
- this process as the client: ``--conversations`` closed-loop conversations (aiohttp), each a
  loop of requests (half streamed, agents picked at random by weight, replicas round-robin,
  the last exchange kept as history) for ``--duration`` seconds.

At the end, clients stop starting requests, each gateway's ``/healthz`` is read, and every
gateway gets SIGTERM while the requests in flight are still running (graceful shutdown under
load). After the processes exit, the database is audited against what the clients saw:

- every execution a client was told about (``actiongate.executions[].id`` in a response or a
  stream's last chunk) has exactly one record, with the same outcome;
- no tool call was recorded twice (same conversation and ``tool_call_id``);
- records no client saw (their response was an error, or lost) are counted, by outcome;
- memory: each gateway's RSS is sampled every second (``/proc``), per process of its tree
  (the parent and each worker) and in total: peak, and the mean of the second half of the run
  against the first;
- the shared rate limit and lost updates, by the probes of :mod:`load_fault_probes`: calls let
  through per conversation and per window against ``limits.rate``, and every captured lead
  field a client was told of found in the stored conversation.

A Markdown report goes to stdout, progress to stderr; the work directory (config, server logs,
SQLite file) is kept when something failed or a gateway logged an error. Exit status 1 when a
seen execution has no record (or a different outcome), a tool call or an execution id appears
twice, a captured field a client was told of is not stored, the shared rate limit let more
calls through than Redis fallbacks explain, or a gateway did not exit 0 after SIGTERM. Every
server dies with this script (stdin closed, ``PR_SET_PDEATHSIG``); a run takes ``--duration``
plus about 15 s.

    .venv/bin/python bench/load_fault.py                                   # SQLite, 1 replica
    .venv/bin/python bench/load_fault.py --db postgres --replicas 2
    .venv/bin/python bench/load_fault.py --db postgres --replicas 2 --workers 2 \
        --redis redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import yaml
from aiohttp import web
from harness import markdown_table, percentile
from load_fault_probes import (
    LEAD_AGENT,
    LEAD_PARTIES,
    RATE_AGENT,
    RATE_CLIENTS_PER_CONVERSATION,
    LeadAudit,
    StateReader,
    TreeSamples,
    check_final,
    flush_redis,
    lead_config,
    lead_loop,
    lead_upstream_app,
    process_tree,
    rate_audit,
    read_metrics,
    render_lead,
    render_processes,
    render_rate,
)

SELF = Path(__file__).resolve()
ROOT = SELF.parent.parent
HOST = "127.0.0.1"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN_TOKEN = "load-fault-admin-token"
PR_SET_PDEATHSIG = 1
JSON = {"Content-Type": "application/json"}
T = TypeVar("T")

# --- the faulty action API ----------------------------------------------------------------------

TIMEOUT_SLEEP_S = 2.5
"""How long ``/timeout`` sleeps: past every action's ``timeout_s`` below."""
DRIP_INTERVAL_S = 0.05
DRIP_SHORT, DRIP_LONG = 16, 40
"""Bytes ``/drip`` sends (0.8 s, inside the deadline) and a long drip sends (2 s, past it)."""
FLAKY = (("ok", 50), ("error", 15), ("timeout", 10), ("reset", 10), ("drip", 10), ("drip_long", 5))


def _pick(weighted: tuple[tuple[str, int], ...], rng: random.Random) -> str:
    names, weights = zip(*weighted, strict=True)
    return rng.choices(names, weights)[0]


def faulty_app(seed: int) -> web.Application:
    """The action API; the first path segment names the behaviour."""
    rng = random.Random(seed)
    served: Counter[str] = Counter()

    async def behave(request: web.Request, kind: str) -> web.StreamResponse:
        served[kind] += 1
        if request.can_read_body:
            await request.read()
        if kind == "ok":
            return web.json_response({"ref": request.match_info["ref"], "status": "shipped"})
        if kind == "timeout":
            await asyncio.sleep(TIMEOUT_SLEEP_S)
            return web.json_response({"late": True})
        if kind == "error":
            status = rng.choice((500, 500, 503))
            return web.json_response({"error": "the API fell over"}, status=status)
        if kind == "reset":
            transport = request.transport
            sock = transport.get_extra_info("socket") if transport else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if transport is not None:
                transport.abort()  # with SO_LINGER 0: an RST, not a FIN
            return web.Response()
        n = DRIP_SHORT if kind == "drip" else DRIP_LONG
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for _ in range(n):
            await response.write(b".")
            await asyncio.sleep(DRIP_INTERVAL_S)
        await response.write_eof()
        return response

    async def handle(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        if kind == "flaky":
            kind = _pick(FLAKY, rng)
        if kind not in {"ok", "timeout", "error", "reset", "drip", "drip_long"}:
            raise web.HTTPNotFound()
        return await behave(request, kind)

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(dict(served))

    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/{kind}/{ref}", handle)
    return app


# --- the actions, agents and upstreams ----------------------------------------------------------


@dataclass(frozen=True)
class ActionSpec:
    """One action of the gateway's config, with the weight clients pick its agent by."""

    tool: str
    path: str
    weight: int
    timeout_s: float
    method: str = "GET"


ACTIONS = (
    ActionSpec("ok_lookup", "ok", 25, 5.0),
    ActionSpec("flaky", "flaky", 15, 1.5),
    ActionSpec("flaky_post", "flaky", 10, 1.5, "POST"),
    ActionSpec("slow_drip", "drip", 10, 1.5),
    ActionSpec("server_error", "error", 8, 3.0),
    ActionSpec("conn_reset", "reset", 8, 3.0),
    ActionSpec("slow_timeout", "timeout", 8, 1.0),
    # Weight 0: only the rate-limit probe's clients call it (load_fault_probes.py).
    ActionSpec(RATE_AGENT, "ok", 0, 5.0),
)
TROUBLED = "troubled"
TROUBLED_WEIGHT = 16
TROUBLED_TIMEOUT_S = 2.0
"""The troubled agent's upstream deadline; some queued replies wait longer (a 504)."""
TROUBLED_TOOL = "flaky"


def troubled_replies(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Replies for the troubled upstream's queue (taken by any of its requests, in order)."""
    words = " ".join(f"word{i}" for i in range(16))
    mix: list[tuple[dict[str, Any], int]] = [
        ({"error": {"status": 500, "message": "the model is overloaded"}}, 30),
        ({"content": f"Slowly: {words}.", "chunk_delay_s": 0.05}, 25),
        ({"tool_calls": [{"name": TROUBLED_TOOL, "arguments": {"ref": "q"}}], "delay_s": 0.2}, 25),
        ({"content": f"Breaking off: {words}.", "disconnect": True}, 10),
        ({"content": "Too late.", "delay_s": TROUBLED_TIMEOUT_S + 1.0}, 10),
    ]
    replies, weights = zip(*mix, strict=True)
    return list(rng.choices(replies, weights, k=n))


LIMITS = {"concurrency": 64, "rate": 30, "per_s": 10, "failures": 5, "cooldown_s": 3}
"""``limits:`` of the config. Breakers re-close after 3 s, so the failing APIs keep being
called during the run. The rate is what the rate-limit probe's audit counts against: 10 s
windows give a 30 s run three of them, and the load's own conversations (about one request
a second) stay well below 30 calls in 10 s."""


def gateway_config(
    ports: dict[str, int], database: str, redis_url: str | None = None
) -> dict[str, Any]:
    """The gateway's config: one agent per action, the troubled agent and the lead probe."""
    api = f"http://{HOST}:{ports['faulty']}"
    actions = []
    for spec in ACTIONS:
        action: dict[str, Any] = {
            "name": spec.tool,
            "tool_name": spec.tool,
            "description": f"Look something up ({spec.path}).",
            "method": spec.method,
            "url": f"{api}/{spec.path}/{{{{args.ref}}}}",
            "parameters": {"ref": {"type": "string", "required": True}},
            "timeout_s": spec.timeout_s,
        }
        if spec.method != "GET":
            action |= {"confirm": False, "body": {"ref": "{{args.ref}}"}}
        actions.append(action)
    agents: list[dict[str, Any]] = [
        {
            "id": spec.tool,
            "upstream": {"base_url": f"http://{HOST}:{ports[spec.tool]}/v1"},
            "actions": [spec.tool],
        }
        for spec in ACTIONS
    ]
    agents.append(
        {
            "id": TROUBLED,
            "upstream": {
                "base_url": f"http://{HOST}:{ports[TROUBLED]}/v1",
                "timeout_s": TROUBLED_TIMEOUT_S,
            },
            "actions": [TROUBLED_TOOL],
        }
    )
    lead_agent, lead_action = lead_config(ports[LEAD_AGENT], HOST)
    agents.append(lead_agent)
    actions.append(lead_action)
    limits: dict[str, Any] = dict(LIMITS)
    if redis_url:
        limits["redis"] = redis_url
    return {
        "upstream": {"base_url": f"http://{HOST}:{ports['ok_lookup']}/v1", "model": "scripted"},
        "database": database,
        "egress": {"allow": [HOST]},
        "limits": limits,
        "agents": agents,
        "actions": actions,
    }


async def serve_upstreams(ports: dict[str, int]) -> None:
    """Scripted upstreams in fixed mode: one per action (calling it), one for the troubled agent."""
    from examples.scripted_upstream import create_app

    runners = []
    for name, port in ports.items():
        tool = TROUBLED_TOOL if name == TROUBLED else name
        if name == LEAD_AGENT:
            app = lead_upstream_app()
        else:
            app = create_app(fixed_tool=tool, fixed_args={"ref": f"{name}-1"})
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        runners.append(runner)
    try:
        await _until_orphaned()
    finally:
        for runner in runners:
            await runner.cleanup()


async def serve_faulty(port: int, seed: int) -> None:
    runner = web.AppRunner(faulty_app(seed), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    try:
        await _until_orphaned()
    finally:
        await runner.cleanup()


async def _until_orphaned() -> None:
    """Return when the process that started this one closes our stdin, or is gone."""
    await asyncio.to_thread(sys.stdin.buffer.read)


# --- processes ----------------------------------------------------------------------------------


def log(message: str) -> None:
    sys.stderr.write(f"[load_fault] {message}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Proc:
    """A process this script started."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when this script dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(name: str, cmd: list[str], work: Path, port: int = 0) -> Proc:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ACTIONGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    log_path = work / f"{name}.log"
    with log_path.open("wb") as out:
        # Servers read stdin until it closes: they end when this script does, however it ends.
        process = subprocess.Popen(
            cmd,
            cwd=work,
            env=env,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return Proc(name, process, log_path, port)


def kill(proc: Proc) -> None:
    """SIGKILL to the process group this script created (servers left running after an error)."""
    if proc.process.stdin is not None:
        with contextlib.suppress(OSError):
            proc.process.stdin.close()
    if proc.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.process.wait(5)


async def wait_ready(session: aiohttp.ClientSession, proc: Proc, path: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited at start-up:\n{proc.tail()}")
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(proc.url + path, timeout=aiohttp.ClientTimeout(2)) as r:
                if r.status < 500:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready after 30 s:\n{proc.tail()}")


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (``/proc/stat``, idle and iowait out)."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (``serve --workers``: every worker)."""
    return sum(cpu_seconds(p) for p in process_tree(pid))


# --- the database -------------------------------------------------------------------------------


@dataclass
class Database:
    kind: str
    url: str
    path: Path | None = None
    admin_url: str | None = None
    name: str | None = None

    @classmethod
    async def create(cls, kind: str, work: Path, pg_url: str) -> Database:
        if kind == "sqlite":
            path = work / "load.db"
            return cls(kind, f"sqlite:///{path}", path=path)
        import asyncpg

        name = f"ag_load_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(pg_url, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        base, _, _ = pg_url.rpartition("/")
        return cls(kind, f"{base}/{name}", admin_url=pg_url, name=name)

    async def records(self) -> list[dict[str, Any]]:
        columns = (
            "id, timestamp, duration_ms, agent_id, conversation_id, action, tool_call_id, "
            "outcome, injected, error"
        )
        query = f"SELECT {columns} FROM executions"
        if self.path is not None:
            with contextlib.closing(sqlite3.connect(self.path)) as conn:
                conn.row_factory = sqlite3.Row
                return [dict(row) for row in conn.execute(query)]
        import asyncpg

        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            return [dict(row) for row in await conn.fetch(query)]
        finally:
            await conn.close()

    async def drop(self) -> None:
        if self.admin_url is None:
            return
        import asyncpg

        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()


# --- the clients --------------------------------------------------------------------------------


@dataclass
class Result:
    """One request as a client saw it."""

    agent: str
    stream: bool
    replica: int
    kind: str
    """``ok``, ``http_NNN``, ``stream_error`` (an error event), ``stream_cut`` (no ``[DONE]``),
    or ``transport:<exception>``."""
    latency_s: float
    after_sigterm: bool
    executions: list[dict[str, Any]] = field(default_factory=list)
    conversation: str = ""
    finish_reason: str | None = None
    detail: str = ""
    """A transport error's message."""
    probe: bool = False
    """Sent by the rate-limit probe (kept out of the load's latency and request tables)."""


@dataclass
class Run:
    """Shared state of the client side."""

    gateways: list[Proc]
    deadline: float
    rng: random.Random
    results: list[Result] = field(default_factory=list)
    sigterm_at: float | None = None
    in_flight: int = 0
    next_replica: Iterator[int] = field(default_factory=count)

    def replica(self) -> int:
        return next(self.next_replica) % len(self.gateways)


AGENT_WEIGHTS = (*((s.tool, s.weight) for s in ACTIONS), (TROUBLED, TROUBLED_WEIGHT))


async def one_request(
    session: aiohttp.ClientSession,
    run: Run,
    conversation: str,
    history: list[dict[str, Any]],
    agent: str | None = None,
) -> tuple[Result, list[dict[str, Any]]]:
    """Send one request (to ``agent``, else one picked by weight); returns what happened and
    the history for the next one."""
    probe = agent is not None
    agent = agent or _pick(AGENT_WEIGHTS, run.rng)
    stream = run.rng.random() < 0.5
    replica = run.replica()
    user = {"role": "user", "content": f"Please look up ref {run.rng.randrange(10**6)}."}
    body = {
        "model": agent,
        "stream": stream,
        "messages": [*history, user],
        "conversation": {"id": conversation},
    }
    url = run.gateways[replica].url + "/v1/chat/completions"
    started = time.monotonic()
    result = Result(agent, stream, replica, "ok", 0.0, False, conversation=conversation)
    result.probe = probe
    next_history: list[dict[str, Any]] = []
    run.in_flight += 1
    try:
        async with session.post(url, data=orjson.dumps(body), headers=JSON) as resp:
            if resp.status != 200:
                await resp.read()
                result.kind = f"http_{resp.status}"
            elif not stream:
                data = orjson.loads(await resp.read())
                ext = data["actiongate"]
                result.executions = ext["executions"]
                result.finish_reason = data["choices"][0]["finish_reason"]
                final = data["choices"][0]["message"]
                next_history = [user, *ext["messages"], final]
            else:
                text, last, done, error = [], None, False, False
                finish: str | None = None
                async for line in resp.content:
                    if not line.startswith(b"data: "):
                        continue
                    payload = line[6:].strip()
                    if payload == b"[DONE]":
                        done = True
                        continue
                    chunk = orjson.loads(payload)
                    if "error" in chunk:
                        error = True
                        continue
                    last = chunk
                    for choice in chunk.get("choices") or []:
                        text.append((choice.get("delta") or {}).get("content") or "")
                        finish = choice.get("finish_reason") or finish
                if error:
                    result.kind = "stream_error"
                elif not done or last is None or "actiongate" not in last:
                    result.kind = "stream_cut"
                else:
                    ext = last["actiongate"]
                    result.executions = ext["executions"]
                    result.finish_reason = finish
                    final = {"role": "assistant", "content": "".join(text)}
                    next_history = [user, *ext["messages"], final]
    except (aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError) as e:
        result.kind = f"transport:{type(e).__name__}"
        result.detail = str(e)[:120]
    finally:
        run.in_flight -= 1
    result.latency_s = time.monotonic() - started
    result.after_sigterm = run.sigterm_at is not None
    return result, next_history if result.kind == "ok" else []


async def conversation_loop(session: aiohttp.ClientSession, run: Run, n: int, tag: str) -> None:
    conversation = f"load-{tag}-{n}"
    history: list[dict[str, Any]] = []
    await asyncio.sleep(run.rng.random() * 0.5)  # do not all start in the same millisecond
    while time.monotonic() < run.deadline:
        result, history = await one_request(session, run, conversation, history)
        run.results.append(result)


async def rate_probe_loop(session: aiohttp.ClientSession, run: Run, conversation: str) -> None:
    """One of several clients hammering one conversation of the rate-limit probe."""
    await asyncio.sleep(run.rng.random() * 0.5)
    while time.monotonic() < run.deadline:
        result, _ = await one_request(session, run, conversation, [], agent=RATE_AGENT)
        run.results.append(result)


async def keep_troubled_queue(session: aiohttp.ClientSession, run: Run, url: str) -> None:
    """Keep the troubled upstream's queue stocked until the deadline."""
    rng = random.Random(run.rng.random())
    while time.monotonic() < run.deadline:
        replies = troubled_replies(rng, 200)
        async with session.post(url, json={"replies": []}) as resp:
            queued = (await resp.json())["queued"]
        if queued < 150:
            async with session.post(url, json={"replies": replies}) as resp:
                resp.raise_for_status()
        await asyncio.sleep(0.2)


async def sample_rss(run: Run, samples: dict[int, list[int]], trees: list[TreeSamples]) -> None:
    """Every second: each process of each replica's tree, and the replica's total."""
    while run.sigterm_at is None:
        for i, gateway in enumerate(run.gateways):
            samples[i].append(trees[i].sample(gateway.process.pid))
        await asyncio.sleep(1.0)


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Report:
    args: argparse.Namespace
    elapsed_s: float = 0.0
    results: list[Result] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)
    rss: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    cpu_s: list[float] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    shutdown_s: list[float] = field(default_factory=list)
    in_flight_at_sigterm: int = 0
    faulty_served: dict[str, int] = field(default_factory=dict)
    log_errors: list[Counter[str]] = field(default_factory=list)
    cpu_pct: dict[str, float] = field(default_factory=dict)
    trees: list[TreeSamples] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    lead: LeadAudit = field(default_factory=LeadAudit)


async def run_load(args: argparse.Namespace, work: Path) -> Report:
    report = Report(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    log(f"seed {seed}; work directory {work}")
    rng = random.Random(seed)
    ports = {"faulty": free_port(), TROUBLED: free_port(), LEAD_AGENT: free_port()}
    ports |= {spec.tool: free_port() for spec in ACTIONS}
    me = [sys.executable, str(SELF)]
    faulty = spawn(
        "faulty-api",
        [*me, "--serve", "faulty", "--port", str(ports["faulty"]), "--seed", str(seed)],
        work,
        ports["faulty"],
    )
    upstream_ports = {k: v for k, v in ports.items() if k != "faulty"}
    upstreams = spawn(
        "upstreams",
        [*me, "--serve", "upstreams", "--ports", json.dumps(upstream_ports)],
        work,
        ports[TROUBLED],
    )
    servers = [faulty, upstreams]
    gateways: list[Proc] = []
    database = await Database.create(args.db, work, args.pg_url)
    reader = StateReader(database.url, database.path)
    try:
        if args.redis:
            flush_redis(args.redis)
        config_path = work / "config.yaml"
        config_path.write_text(yaml.safe_dump(gateway_config(ports, database.url, args.redis)))
        binary = Path(sys.executable).with_name("actiongate")
        for i in range(args.replicas):
            port = free_port()
            cmd = [str(binary), "serve", "--config", str(config_path), "--port", str(port)]
            cmd += ["--db", database.url, "--workers", str(args.workers)]
            gateways.append(spawn(f"gateway-{i}", cmd, work, port))
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=args.request_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await wait_ready(session, faulty, "/_stats")
            await wait_ready(session, upstreams, "/v1/models")
            for gateway in gateways:
                await wait_ready(session, gateway, "/healthz")
            log(f"{len(gateways)} gateway(s) ready on {args.db}; load for {args.duration:g} s")
            await drive(session, args, gateways, servers, ports, rng, report, reader)
            async with session.get(faulty.url + "/_stats") as resp:
                report.faulty_served = await resp.json()
    finally:
        for proc in [*gateways, *servers]:
            kill(proc)
        report.log_errors = [error_lines(g.log_path) for g in gateways]
    try:
        report.records = await database.records()
        await check_final(reader, report.lead)
    finally:
        await reader.close()
        if not args.keep:
            await database.drop()
    return report


async def drive(
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    gateways: list[Proc],
    servers: list[Proc],
    ports: dict[str, int],
    rng: random.Random,
    report: Report,
    reader: StateReader,
) -> None:
    started = time.monotonic()
    run = Run(gateways, started + args.duration, rng)
    cpu_before = [tree_cpu_seconds(g.process.pid) for g in gateways]
    servers_before = sum(cpu_seconds(p.process.pid) for p in servers)
    client_before, machine_before = time.process_time(), machine_busy_seconds()
    queue_url = f"http://{HOST}:{ports[TROUBLED]}/_script"
    feeder = asyncio.create_task(keep_troubled_queue(session, run, queue_url))
    report.trees = [TreeSamples() for _ in gateways]
    sampler = asyncio.create_task(sample_rss(run, report.rss, report.trees))
    tag = secrets.token_hex(3)
    clients = [
        asyncio.create_task(conversation_loop(session, run, n, tag))
        for n in range(args.conversations)
    ]
    clients += [
        asyncio.create_task(rate_probe_loop(session, run, f"rate-{tag}-{n}"))
        for n in range(args.rate_conversations)
        for _ in range(RATE_CLIENTS_PER_CONVERSATION)
    ]

    def next_url() -> str:
        return run.gateways[run.replica()].url + "/v1/chat/completions"

    clients += [
        asyncio.create_task(
            lead_loop(session, next_url, f"lead-{tag}-{n}", run.deadline, reader, report.lead)
        )
        for n in range(args.lead_conversations)
    ]
    await asyncio.sleep(args.duration)
    await feeder
    # The deadline has passed: clients start no new requests, those in flight carry on.
    for gateway in gateways:
        async with session.get(gateway.url + "/healthz") as resp:
            report.health.append(await resp.json())
        report.metrics.append(await read_metrics(session, gateway.url, ADMIN_TOKEN))
    report.cpu_s = [
        tree_cpu_seconds(g.process.pid) - c for g, c in zip(gateways, cpu_before, strict=True)
    ]
    window = time.monotonic() - started
    servers_s = sum(cpu_seconds(p.process.pid) for p in servers) - servers_before
    client_s = time.process_time() - client_before
    machine_s = machine_busy_seconds() - machine_before
    others_s = machine_s - sum(report.cpu_s) - servers_s - client_s
    report.cpu_pct = {
        "gateways": 100 * sum(report.cpu_s) / window,
        "action API + upstreams": 100 * servers_s / window,
        "client (this script)": 100 * client_s / window,
        "everything else (PostgreSQL, other users)": 100 * max(0.0, others_s) / window,
    }
    report.in_flight_at_sigterm = run.in_flight
    run.sigterm_at = time.monotonic()
    for gateway in gateways:
        gateway.process.send_signal(signal.SIGTERM)
    log(f"SIGTERM sent with {run.in_flight} requests in flight")
    await sampler
    _, pending = await asyncio.wait(clients, timeout=args.request_timeout + 5)
    for task in pending:
        task.cancel()
    for gateway in gateways:
        try:
            code = await asyncio.to_thread(gateway.process.wait, 45)
        except subprocess.TimeoutExpired:
            code = None
        report.exit_codes.append(code)
        report.shutdown_s.append(time.monotonic() - run.sigterm_at)
    report.elapsed_s = time.monotonic() - started
    report.results = run.results
    log(f"{len(run.results)} requests; gateways exited with {report.exit_codes}")


def error_lines(path: Path) -> Counter[str]:
    """What a gateway logged as an error: each exception's last line, else the log line."""
    found: Counter[str] = Counter()
    lines = path.read_text(errors="replace").splitlines()
    in_trace = False
    for n, line in enumerate(lines):
        if line.startswith("Traceback"):
            in_trace = True
        elif in_trace and line and not line.startswith((" ", "Traceback", "During", "The above")):
            found[line[:200]] += 1
            in_trace = False
        elif not in_trace and ("ERROR" in line or line.startswith("error")):
            nxt = lines[n + 1] if n + 1 < len(lines) else ""
            if not nxt.startswith("Traceback"):
                found[line[:200]] += 1
    return found


# --- the audit and the report -------------------------------------------------------------------


@dataclass
class Audit:
    seen: dict[str, dict[str, Any]]
    reported_twice: int
    missing: list[str]
    mismatched: list[tuple[str, str, str]]
    duplicate_calls: int
    unseen: list[dict[str, Any]]
    seen_not_injected: Counter[str]
    not_injected_context: Counter[tuple[str, str | None]]
    """(agent, finish reason of the response) of seen executions not marked injected."""

    @property
    def failed(self) -> bool:
        return bool(self.missing or self.mismatched or self.duplicate_calls or self.reported_twice)


def audit(report: Report) -> Audit:
    seen: dict[str, dict[str, Any]] = {}
    reported_twice = 0
    for result in report.results:
        for execution in result.executions:
            if execution["id"] in seen:
                reported_twice += 1
            seen[execution["id"]] = execution
    by_id = {r["id"]: r for r in report.records}
    missing = [i for i in seen if i not in by_id]
    mismatched = [
        (i, e["outcome"], by_id[i]["outcome"])
        for i, e in seen.items()
        if i in by_id and by_id[i]["outcome"] != e["outcome"]
    ]
    calls = Counter(
        (r["conversation_id"], r["tool_call_id"]) for r in report.records if r["tool_call_id"]
    )
    duplicate_calls = sum(n - 1 for n in calls.values() if n > 1)
    unseen = [r for r in report.records if r["id"] not in seen]
    not_injected = Counter(
        by_id[i]["outcome"] for i in seen if i in by_id and not by_id[i]["injected"]
    )
    context = Counter(
        (result.agent, result.finish_reason)
        for result in report.results
        for execution in result.executions
        if execution["id"] in by_id and not by_id[execution["id"]]["injected"]
    )
    return Audit(
        seen, reported_twice, missing, mismatched, duplicate_calls, unseen, not_injected, context
    )


REJECTIONS = (
    ("failing right now", "circuit open"),
    ("too many calls", "concurrency cap"),
    ("action calls in", "rate limit"),
)


def rejection(error: str | None) -> str:
    for marker, name in REJECTIONS:
        if marker in (error or ""):
            return name
    return "other"


def action_table(report: Report, result: Audit) -> str:
    """Records per action and outcome (refusals by reason), and how many no client saw."""
    columns = ["success", "http_error", "timeout", "connect_error"]
    columns += [f"rejected: {name}" for _, name in REJECTIONS] + ["rejected: other"]
    unseen_ids = {r["id"] for r in result.unseen}
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for record in report.records:
        outcome = record["outcome"]
        if outcome == "rejected":
            outcome = f"rejected: {rejection(record['error'])}"
        row = table[f"{record['agent_id']} / {record['action']}"]
        row[outcome] += 1
        row["not seen"] += record["id"] in unseen_ids
    extra = sorted({o for row in table.values() for o in row} - {*columns, "not seen"})
    headers = ["agent / action", *columns, *extra, "not seen"]
    rows = [
        (name, *(table[name][c] for c in headers[1:]))
        for name in sorted(table, key=lambda n: -sum(table[n].values()))
    ]
    return markdown_table(headers, rows)


FALLBACK_SERIES = 'actiongate_limits_fallback_total{op="%s"}'


def mib(kb: float) -> float:
    return kb / 1024


def render(report: Report, result: Audit) -> tuple[str, bool]:
    """The Markdown report, and whether the run failed."""
    args = report.args
    probes = [r for r in report.results if r.probe]
    results = [r for r in report.results if not r.probe]
    window = [r for r in results if not r.after_sigterm]
    latencies = sorted(r.latency_s * 1000 for r in results)
    ok_latencies = sorted(r.latency_s * 1000 for r in results if r.kind == "ok")
    seen_n = len(result.seen)
    title = f"{args.db}, {args.replicas} replica{'s' * (args.replicas > 1)}"
    title += f" x {args.workers} worker{'s' * (args.workers > 1)}"
    title += ", limits.redis" if args.redis else ", limits per process"
    lines = [f"### Load with faults: {title}", ""]
    lines.append(
        f"{args.conversations} conversations for {args.duration:g} s (then SIGTERM with "
        f"{report.in_flight_at_sigterm} requests in flight); {os.cpu_count()} CPUs shared by "
        "every process. CPU during the load, % of one core: "
        + ", ".join(f"{k} {v:.0f}" for k, v in report.cpu_pct.items())
        + "."
    )
    lines.append("")
    every = len(results) + len(probes) + report.lead.requests
    summary = [
        ("requests completed (the load)", len(results)),
        ("… of which finished after SIGTERM", len(results) - len(window)),
        ("requests/s (the load)", len(results) / report.elapsed_s),
        ("rate-probe requests", len(probes)),
        ("lead-probe requests", report.lead.requests),
        ("requests/s (load and probes)", every / report.elapsed_s),
        ("executions seen by clients", seen_n),
        ("executions seen/s", seen_n / report.elapsed_s),
        ("records in the database", len(report.records)),
        ("records/s", len(report.records) / report.elapsed_s),
        ("latency p50 (ms, all requests of the load)", percentile(latencies, 50)),
        ("latency p99 (ms, all requests of the load)", percentile(latencies, 99)),
        ("latency p50 (ms, complete answers)", percentile(ok_latencies, 50)),
        ("latency p99 (ms, complete answers)", percentile(ok_latencies, 99)),
        ("seen executions without a record", len(result.missing)),
        ("seen executions with another outcome stored", len(result.mismatched)),
        ("execution ids reported twice", result.reported_twice),
        ("tool calls recorded twice", result.duplicate_calls),
        ("records no client saw", len(result.unseen)),
        ("… of which marked injected", sum(1 for r in result.unseen if r["injected"])),
        ("seen executions not marked injected", sum(result.seen_not_injected.values())),
    ]
    lines += [markdown_table(["", "value"], summary), ""]

    kinds = Counter(r.kind for r in results)
    rows = []
    for kind, n in kinds.most_common():
        after = sum(1 for r in results if r.kind == kind and r.after_sigterm)
        streamed = sum(1 for r in results if r.kind == kind and r.stream)
        rows.append((kind, n, streamed, after))
    lines += [markdown_table(["client saw", "requests", "streamed", "after SIGTERM"], rows), ""]

    stored = Counter(r["outcome"] for r in report.records)
    seen_outcomes = Counter(e["outcome"] for e in result.seen.values())
    unseen = Counter(r["outcome"] for r in result.unseen)
    rows = [
        (o, stored[o], seen_outcomes[o], unseen[o], result.seen_not_injected[o])
        for o in sorted(stored | seen_outcomes)
    ]
    headers = ["outcome", "records", "seen by clients", "not seen", "seen, not injected"]
    lines += [markdown_table(headers, rows), ""]

    lines += [action_table(report, result), ""]

    rows = []
    for i, health in enumerate(report.health):
        samples = [s for s in report.rss[i] if s]
        half = len(samples) // 2
        first = sum(samples[:half]) / half if half else float("nan")
        last = sum(samples[half:]) / (len(samples) - half) if samples else float("nan")
        logstats = health["log"]
        metrics = report.metrics[i]
        fallbacks = "/".join(
            f"{metrics.get(FALLBACK_SERIES % op, 0):g}" for op in ("acquire", "release")
        )
        rows.append(
            (
                f"gateway-{i}",
                sum(1 for r in results if r.replica == i),
                mib(max(samples, default=0)),
                mib(first),
                mib(last),
                100 * (last - first) / first if half else float("nan"),
                100 * report.cpu_s[i] / args.duration,
                logstats["written"],
                logstats["queued"],
                logstats["dropped"],
                logstats["write_errors"],
                metrics.get("actiongate_log_records_dropped_total", 0),
                fallbacks,
                str(report.exit_codes[i]),
                report.shutdown_s[i],
                sum(report.log_errors[i].values()),
            )
        )
    # /healthz is answered by one worker; /metrics sums every worker's counters.
    one = " (one worker)" if args.workers > 1 else ""
    headers = [
        "replica",
        "requests",
        "peak RSS MiB (all processes)",
        "mean RSS 1st half",
        "mean RSS 2nd half",
        "growth %",
        "CPU %",
        f"log written{one}",
        f"log queued{one}",
        f"log dropped{one}",
        f"write errors{one}",
        "log dropped (metrics)",
        "limits fallbacks acquire/release",
        "exit",
        "shutdown s",
        "ERROR lines",
    ]
    lines += [markdown_table(headers, rows), ""]
    lines += render_processes(report.trees)
    acquire_fallbacks = sum(m.get(FALLBACK_SERIES % "acquire", 0) for m in report.metrics)
    rate_lines, rate_failed = render_rate(
        rate_audit(report.records, result.seen.keys(), LIMITS["per_s"]),
        LIMITS["rate"],
        LIMITS["per_s"],
        args.replicas * args.workers,
        acquire_fallbacks,
        shared=bool(args.redis),
    )
    probe_kinds = ", ".join(f"{k} {n}" for k, n in Counter(r.kind for r in probes).most_common())
    lines += [*rate_lines, f"Rate-probe requests as clients saw them: {probe_kinds}.", ""]
    lead_lines, lead_failed = render_lead(report.lead)
    lines += lead_lines
    details = Counter(f"{r.kind}: {r.detail}" for r in results if r.detail)
    for detail, n in details.most_common(5):
        lines.append(f"Client transport error {n} x: `{detail}`")
    for i in range(len(report.health)):
        samples = [s for s in report.rss[i] if s]
        if samples:
            marks = [samples[min(len(samples) - 1, len(samples) * k // 10)] for k in range(1, 11)]
            trail = ", ".join(f"{mib(kb):.0f}" for kb in marks)
            lines.append(f"gateway-{i} RSS MiB at each tenth of the run: {trail}.")
    served = ", ".join(f"{k} {v}" for k, v in sorted(report.faulty_served.items()))
    lines.append(f"Faulty API served: {served}.")
    lines.append("")
    if result.not_injected_context:
        found = ", ".join(
            f"{agent} (finish_reason {finish}): {n}"
            for (agent, finish), n in result.not_injected_context.most_common()
        )
        lines.append(f"Seen executions not marked injected, by agent and response: {found}.")
    for i, errors in enumerate(report.log_errors):
        for message, n in errors.most_common(5):
            lines.append(f"gateway-{i} logged {n} x: `{message}`")
    lines.append("")
    if result.missing:
        lines.append(f"Seen but not stored (first 10): {', '.join(result.missing[:10])}")
    if result.mismatched:
        lines.append(f"Outcome mismatches (first 10): {result.mismatched[:10]}")
    failed = result.failed or rate_failed or lead_failed or any(c != 0 for c in report.exit_codes)
    lines.append(f"**{'FAIL' if failed else 'PASS'}**")
    return "\n".join(lines), failed


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (as ``actiongate serve`` does), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--replicas", type=int, choices=[1, 2], default=None)
    parser.add_argument(
        "--workers", type=int, default=1, help="serve --workers N for each replica (1-4)"
    )
    parser.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="limits.redis, e.g. redis://127.0.0.1:6379/9 (that database is flushed first)",
    )
    parser.add_argument(
        "--rate-conversations",
        type=int,
        default=3,
        help=f"rate-limit probe conversations, {RATE_CLIENTS_PER_CONVERSATION} clients each",
    )
    parser.add_argument(
        "--lead-conversations",
        type=int,
        default=6,
        help=f"lost-update probe conversations, {LEAD_PARTIES} requests at once per round",
    )
    parser.add_argument("--pg-url", default=os.environ.get("ACTIONGATE_TEST_PG", DEFAULT_PG))
    parser.add_argument("--request-timeout", type=float, default=40.0, help="client, seconds")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory and database")
    parser.add_argument("--serve", choices=["faulty", "upstreams"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replicas is None:
        args.replicas = 2 if args.db == "postgres" else 1
    if args.replicas == 2 and args.db == "sqlite":
        parser.error("two replicas share a PostgreSQL database: use --db postgres")
    if not 0 < args.duration <= 600 or not 0 < args.conversations <= 2000:
        parser.error("--duration must be in (0, 600] and --conversations in (0, 2000]")
    if not 1 <= args.workers <= 4:
        parser.error("--workers must be 1 to 4")
    if args.redis and not args.redis.startswith(("redis://", "rediss://")):
        parser.error("--redis takes a redis://HOST:PORT/DB URL")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve == "faulty":
        run_async(serve_faulty(args.port, args.seed or 0))
        return 0
    if args.serve == "upstreams":
        run_async(serve_upstreams(json.loads(args.ports)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="load_fault-"))
    report = run_async(run_load(args, work))
    result = audit(report)
    text, failed = render(report, result)
    print(text, flush=True)
    if failed or args.keep or any(report.log_errors):
        log(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
