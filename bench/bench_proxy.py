"""actiongate next to a direct call and LiteLLM's proxy: added latency, throughput, memory.

Three routes to one zero-latency mock upstream (``python -m examples.scripted_upstream
--fixed``), every server in its own process on 127.0.0.1:

- **direct**: the benchmark calls the mock itself;
- **actiongate**: ``actiongate serve`` (one worker, execution log on, SQLite in a temporary
  directory, egress allowed to 127.0.0.1), one agent with one GET action (``look_up_order``) on
  the sample customer API (``python -m examples.customer_api``);
- **LiteLLM**: its proxy (``litellm[proxy]``, pinned in ``bench/requirements-bench.txt``) from its
  own virtualenv (``--bench-venv``, created on first use), one worker, the mock as an ``openai/``
  model with ``api_base``, no database or master key, telemetry, remote fetches and access log
  off, in a minimal environment.

Phases (the sequential ones interleave the routes request by request, so a disturbance hits
them alike):

1. no tools: ``--requests`` sequential completions per route; added = pNN(route) - pNN(direct);
2. tool round trip, actiongate only (LiteLLM runs no tools server-side): the mock is scripted
   (``POST /_script``, outside the timed span) to call the action once, then to answer. That is
   two upstream calls, each worth one direct completion, so the added latency per tool round
   trip is p50(actiongate) - 2 x p50(direct): the gateway's two hops, the action's HTTP call
   (the action API's own time included) and its log record;
3. streaming time to first token (first chunk with non-empty ``delta.content``), p50;
4. throughput: ``--concurrency`` closed-loop clients, ``--warmup`` then ``--duration`` seconds,
   with the server's CPU per request, for plain completions and for whole tool loops (a second
   mock, ``--tool look_up_order``, asks for the action on every first turn, so each request is
   model -> action -> model); a window in which other processes used over 20 % of a
   core is run again (``--retries``) and the least disturbed one is reported;
5. peak memory: the larger of the proxy process tree's summed ``VmHWM`` at the end and its summed
   ``VmRSS`` sampled every 0.2 s (``/proc``);
6. a py-spy profile of actiongate under the tool-loop load (``--profile-load plain``: the
   plain one), by ``gateway/`` function.

``--workers N`` runs ``actiongate serve --workers N`` (then the gateway is not pinned to a CPU).

Placement on two or more CPUs: the proxy under test has a CPU to itself; the benchmark client,
the mock and the action API share another (in the direct throughput run, the mock takes the
proxy's CPU). The report gives each server's CPU use and other processes' (noise) per phase.

    .venv/bin/python bench/bench_proxy.py                  # ~2 min (+ ~1 min once: LiteLLM)
    .venv/bin/python bench/bench_proxy.py --skip-litellm --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from subprocess import STDOUT, Popen
from typing import BinaryIO

import aiohttp
import orjson
from harness import cpu_placement, markdown_table, percentile, pin_to_cpu, run_phase

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "bench" / "requirements-bench.txt"
FIXED_TEXT = "This is a scripted reply."  # examples.scripted_upstream.FIXED_TEXT
AGENT, TOOL, ORDER = "bench", "look_up_order", "A-10023"
ORDERS_KEY = "demo-orders-key"  # examples.customer_api.CREDENTIALS["orders_key"]
MESSAGES = [{"role": "user", "content": f"Where is my order {ORDER}?"}]
JSON_HEADERS = {"Content-Type": "application/json"}
MAX_RUN_S = 600
"""A hard limit on one run (start-ups, phases and retries); the servers are stopped then."""
NOISY = 20.0
"""Other processes' CPU (% of a core) above which a load window is run again (--retries)."""
LITELLM_ENV = {  # bundled cost map and header config, no blog/policy fetches, no UI or docs
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "LITELLM_LOG": "ERROR",
}
LITELLM_NOTE = (
    "one uvicorn worker (`--num_workers 1`), no database or master key, `--telemetry False`, "
    "bundled model-cost map and no remote fetches (LITELLM_LOCAL_* variables), admin UI and "
    "docs off, uvicorn access log off, minimal environment."
)
ACTIONGATE_CONFIG = """\
upstream: {base_url: "http://127.0.0.1:MOCK_PORT/v1", model: scripted}
database: "sqlite:///DATABASE"
egress: {allow: ["127.0.0.1"]}
secrets: {ORDERS_KEY: ORDERS_VALUE}
agents:
  - {id: AGENT, system_prompt: "You help customers with their orders.", actions: [TOOL]}
  - {id: AGENT-responses, system_prompt: "You help customers with their orders.",
     actions: [TOOL], upstream: {api: responses}}
  - {id: AGENT-anthropic, system_prompt: "You help customers with their orders.",
     actions: [TOOL], upstream: {api: anthropic}}
  - {id: AGENT-tools, system_prompt: "You help customers with their orders.",
     actions: [TOOL], upstream: {base_url: "http://127.0.0.1:TOOLS_PORT/v1"}}
actions:
  - name: Look up order
    description: Look up the status and delivery date of one order.
    method: GET
    url: "http://127.0.0.1:API_PORT/orders/{{args.order_number}}"
    parameters:
      order_number: {type: string, description: "The order number, e.g. A-10023.", required: true}
    auth: {type: api_key, name: X-Api-Key, in: header, value: "{{secrets.ORDERS_KEY}}"}
"""
LITELLM_CONFIG = """\
model_list:
  - model_name: AGENT
    litellm_params: {model: openai/scripted, api_base: "http://127.0.0.1:MOCK_PORT/v1",
                     api_key: sk-bench}
litellm_settings: {telemetry: false, set_verbose: false, drop_params: true}
general_settings: {disable_spend_logs: true, disable_error_logs: true}
"""
UVICORN_LOGGING = {  # uvicorn's access log off, as actiongate serve has it
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"err": {"class": "logging.StreamHandler"}},
    "loggers": {
        "uvicorn": {"handlers": ["err"], "level": "WARNING"},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


class BenchError(Exception):
    """A server did not start or answered something unexpected."""


def log(message: str) -> None:
    """Progress on stderr; the report goes to stdout."""
    sys.stderr.write(f"[bench_proxy] {message}\n")


def fill(template: str, **values: object) -> str:
    for key, value in values.items():
        template = template.replace(key.upper(), str(value))
    return template


# --- processes and /proc ------------------------------------------------------------------------


@dataclass
class Service:
    """A server this benchmark started, in a process group of its own."""

    name: str
    process: Popen[bytes]
    log_path: Path
    ready_url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the benchmark dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start(cmd: list[str], out: BinaryIO, env: dict[str, str] | None = None) -> Popen[bytes]:
    """A child in a process group of its own, which dies with the benchmark."""
    return Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def spawn(name: str, cmd: list[str], work: Path, ready_url: str, env: dict[str, str]) -> Service:
    log_path = work / f"{name}.log"
    with log_path.open("wb") as out:
        return Service(name, start(cmd, out, env), log_path, ready_url)


def stop(process: Popen[bytes]) -> None:
    """SIGTERM to the process group this benchmark created, SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)


async def wait_ready(session: aiohttp.ClientSession, service: Service, timeout_s: float) -> None:
    """Poll the service until it gives any HTTP answer below 500."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise BenchError(f"{service.name} exited at start-up:\n{service.tail()}")
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(service.ready_url, timeout=aiohttp.ClientTimeout(2)) as r:
                if r.status < 500:
                    return
        await asyncio.sleep(0.1)
    raise BenchError(f"{service.name} not ready after {timeout_s:g} s:\n{service.tail()}")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found, todo = [], [pid]
    while todo:
        found.append(current := todo.pop())
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
    return found


def status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process tree so far."""
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def pin_tree(pid: int, cpu: int | None) -> None:
    """Move every thread of a process tree to one CPU (threads started later inherit it)."""
    for p in tree(pid) if cpu is not None else []:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), {cpu})


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used (``/proc/stat``: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Noise:
    """CPU used by processes other than this benchmark and its servers, over a phase."""

    pids: list[int]
    _start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def _ours(self) -> float:
        return time.process_time() + sum(cpu_seconds(pid) for pid in self.pids)

    def start(self) -> None:
        self._start = (time.perf_counter(), machine_busy_seconds(), self._ours())

    def other_pct(self) -> float:
        """Others' CPU since :meth:`start`, in % of one core (tick rounding clamped at 0)."""
        started, machine, ours = self._start
        others = machine_busy_seconds() - machine - (self._ours() - ours)
        return max(0.0, 100 * others / (time.perf_counter() - started))


async def watch_rss(pid: int, peak_kb: list[int]) -> None:
    """Keep ``peak_kb[0]`` at the largest summed RSS of the process tree seen so far."""
    while True:
        peak_kb[0] = max(peak_kb[0], sum(status_kb(p, "VmRSS") for p in tree(pid)))
        await asyncio.sleep(0.2)


# --- the servers --------------------------------------------------------------------------------


@dataclass
class Route:
    """One way to the mock: direct, through actiongate or through LiteLLM."""

    name: str
    url: str
    model: str
    service: Service
    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    results: dict[str, float] = field(default_factory=dict)
    peak_kb: list[int] = field(default_factory=lambda: [0])


@dataclass
class Setup:
    """What was started, what could not be, and what was measured besides the routes."""

    routes: list[Route]
    services: list[Service]
    ports: dict[str, int]
    cpus: tuple[int | None, int | None]
    litellm_note: str | None = None
    litellm_version: str | None = None
    loop: Route | None = None
    """Tool loops through actiongate (model -> action -> model), for the load phase only."""
    noise: dict[str, float] = field(default_factory=dict)
    db_rows: dict[str, int] = field(default_factory=dict)
    profile: str = ""

    def base(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


def ensure_bench_venv(venv: Path, work: Path) -> str | None:
    """Create the LiteLLM venv from requirements-bench.txt if it is missing; None or why not."""
    if not (venv / "bin" / "litellm").exists():
        log(f"creating {venv} from {REQUIREMENTS.name} (once; about a minute)")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]
        with (work / "bench-venv.log").open("wb") as out:
            try:
                for cmd in ([sys.executable, "-m", "venv", str(venv)], pip):
                    subprocess.run(cmd, check=True, stdout=out, stderr=out, timeout=900)
            except (OSError, subprocess.SubprocessError) as e:
                log((work / "bench-venv.log").read_text(errors="replace")[-2000:])
                return f"could not install litellm[proxy] into {venv} ({type(e).__name__})"
    # litellm 1.82.8 (compromised) shipped litellm_init.pth, which runs at every start-up.
    if found := sorted(p.name for p in venv.glob("lib/python*/site-packages/*litellm*.pth")):
        return f"refusing to run LiteLLM: {venv} contains {', '.join(found)}"
    return None


def start_servers(args: argparse.Namespace, work: Path, cpus: tuple[int | None, ...]) -> Setup:
    """Spawn the mock, the action API, actiongate and (unless skipped or missing) LiteLLM."""
    ports = {name: free_port() for name in ("mock", "tools", "api", "actiongate", "litellm")}
    setup = Setup([], [], ports, (cpus[0], cpus[1]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    py = [sys.executable, "-m"]
    mock = spawn(
        "mock",
        [*py, "examples.scripted_upstream", "--fixed", "--port", str(ports["mock"])],
        work,
        f"{setup.base('mock')}/v1/models",
        env,
    )
    # A second mock that asks for the action on every first turn: the tool-loop load.
    tool_mode = ["--tool", TOOL, "--tool-args", orjson.dumps({"order_number": ORDER}).decode()]
    tools = spawn(
        "mock-tools",
        [*py, "examples.scripted_upstream", "--port", str(ports["tools"]), *tool_mode],
        work,
        f"{setup.base('tools')}/v1/models",
        env,
    )
    api = spawn(
        "action-api",
        [*py, "examples.customer_api", "--port", str(ports["api"])],
        work,
        f"{setup.base('api')}/customers",
        env,
    )
    config = work / "actiongate.yaml"
    config.write_text(
        fill(
            ACTIONGATE_CONFIG,
            mock_port=ports["mock"],
            tools_port=ports["tools"],
            api_port=ports["api"],
            database=work / "actiongate.db",
            orders_value=ORDERS_KEY,
            agent=AGENT,
            tool=TOOL,
        )
    )
    binary = Path(sys.executable).with_name("actiongate")
    serve = [str(binary)] if binary.exists() else [*py, "gateway.cli.main"]
    serve += ["serve", "--config", str(config), "--port", str(ports["actiongate"])]
    serve += ["--workers", str(args.workers)]
    gate = spawn("actiongate", serve, work, f"{setup.base('actiongate')}/healthz", env)
    setup.services = [mock, tools, api, gate]
    setup.routes = [
        Route("direct", f"{setup.base('mock')}/v1/chat/completions", "scripted", mock),
        Route("actiongate", f"{setup.base('actiongate')}/v1/chat/completions", AGENT, gate),
    ]
    url = f"{setup.base('actiongate')}/v1/chat/completions"
    setup.loop = Route("actiongate tool loop", url, f"{AGENT}-tools", gate)
    venv = Path(args.bench_venv)
    setup.litellm_note = (
        "skipped (--skip-litellm)" if args.skip_litellm else ensure_bench_venv(venv, work)
    )
    if setup.litellm_note is None:
        sites = [str(p) for p in venv.glob("lib/python*/site-packages")]
        setup.litellm_version = next(metadata.distributions(name="litellm", path=sites)).version
        (work / "litellm.yaml").write_text(
            fill(LITELLM_CONFIG, agent=AGENT, mock_port=ports["mock"])
        )
        (work / "uvicorn-logging.json").write_text(json.dumps(UVICORN_LOGGING))
        (home := work / "litellm-home").mkdir()
        # Third-party code: it sees none of this session's environment variables.
        ll_env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
        cmd = [str(venv / "bin" / "litellm"), "--config", str(work / "litellm.yaml")]
        cmd += ["--host", "127.0.0.1", "--port", str(ports["litellm"]), "--num_workers", "1"]
        cmd += ["--telemetry", "False", "--log_config", str(work / "uvicorn-logging.json")]
        url = f"{setup.base('litellm')}/health/liveliness"
        litellm = spawn("litellm", cmd, work, url, {**ll_env, **LITELLM_ENV})
        setup.services.append(litellm)
        setup.routes.append(
            Route("litellm", f"{setup.base('litellm')}/v1/chat/completions", AGENT, litellm)
        )
    for service in setup.services:
        if service.name == "actiongate" and args.workers > 1:
            continue  # several workers: the gateway is not confined to one CPU
        pin_tree(service.pid, cpus[1] if service.name in ("actiongate", "litellm") else cpus[0])
    return setup


async def start_all(session: aiohttp.ClientSession, setup: Setup) -> None:
    """Wait for every server and check one answer per route; a failing LiteLLM is dropped."""
    waits = [wait_ready(session, s, 90 if s.name == "litellm" else 30) for s in setup.services]
    results = await asyncio.gather(*waits, return_exceptions=True)
    for service, result in zip(setup.services, results, strict=True):
        if isinstance(result, BaseException) and service.name != "litellm":
            raise result
        if isinstance(result, BaseException):
            setup.litellm_note = f"did not start ({str(result).splitlines()[0]})"
            log(str(result))
    for route in list(setup.routes):
        try:
            if route.name != "litellm" or setup.litellm_note is None:
                check_answer(route.name, await post(session, route.url, body(route.model)))
        except (BenchError, aiohttp.ClientError, KeyError, orjson.JSONDecodeError) as e:
            if route.name != "litellm":
                raise
            setup.litellm_note = f"answered wrongly ({e})"
        if route.name == "litellm" and setup.litellm_note is not None:
            stop(route.service.process)
            setup.routes.remove(route)
    if setup.loop is not None:
        answer = await post(session, setup.loop.url, body(setup.loop.model))
        check_answer(setup.loop.name, answer, executions=1)


# --- requests and phases ------------------------------------------------------------------------


def body(model: str, *, stream: bool = False) -> bytes:
    return orjson.dumps({"model": model, "messages": MESSAGES, "stream": stream})


async def post(session: aiohttp.ClientSession, url: str, data: bytes) -> bytes:
    async with session.post(url, data=data, headers=JSON_HEADERS) as resp:
        payload = await resp.read()
        if resp.status != 200:
            raise BenchError(f"{url}: HTTP {resp.status}: {payload[:300]!r}")
        return payload


async def timed_post(session: aiohttp.ClientSession, url: str, data: bytes) -> float:
    started = time.perf_counter()
    await post(session, url, data)
    return time.perf_counter() - started


async def first_token(session: aiohttp.ClientSession, url: str, data: bytes) -> float:
    """Seconds until the first chunk with content; the stream is then read to its end."""
    started, ttft = time.perf_counter(), None
    async with session.post(url, data=data, headers=JSON_HEADERS) as resp:
        if resp.status != 200:
            raise BenchError(f"{url}: HTTP {resp.status}: {(await resp.read())[:300]!r}")
        async for line in resp.content:
            if ttft is None and line.startswith(b"data: {"):
                choices = orjson.loads(line[6:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - started
    if ttft is None:
        raise BenchError(f"{url}: the stream carried no content")
    return ttft


def check_answer(name: str, payload: bytes, executions: int = 0) -> None:
    """The mock's fixed text came back (and, through a tool, that many successful actions)."""
    data = orjson.loads(payload)
    if (content := data["choices"][0]["message"].get("content")) != FIXED_TEXT:
        raise BenchError(f"{name}: unexpected answer {content!r}")
    ran = data.get("actiongate", {}).get("executions", [])
    if executions and [e["outcome"] for e in ran] != ["success"] * executions:
        raise BenchError(f"{name}: expected {executions} successful execution(s), got {ran}")


async def sequential(
    session: aiohttp.ClientSession, routes: list[Route], n: int, warmup: int
) -> None:
    """Non-streamed, then streamed latency; each round visits every route, starting elsewhere."""
    for metric, count in (("plain", warmup), ("plain", n), ("ttft", warmup), ("ttft", n)):
        for i in range(count):
            k = i % len(routes)
            for r in routes[k:] + routes[:k]:
                if metric == "plain":
                    elapsed = await timed_post(session, r.url, body(r.model))
                else:
                    elapsed = await first_token(session, r.url, body(r.model, stream=True))
                if count == n:
                    r.samples[metric].append(elapsed)


async def tool_round_trips(
    session: aiohttp.ClientSession, setup: Setup, n: int, warmup: int
) -> None:
    """actiongate requests in which the model calls the action once, next to direct requests.

    Also timed, for reference: the action's GET sent straight to the action API.
    """
    direct, gate = setup.routes[0], setup.routes[1]
    call = {"name": TOOL, "arguments": {"order_number": ORDER}}
    script = orjson.dumps({"replies": [{"tool_calls": [call]}]})
    api_url, api_headers = f"{setup.base('api')}/orders/{ORDER}", {"X-Api-Key": ORDERS_KEY}
    for i in range(warmup + n):
        started = time.perf_counter()
        async with session.get(api_url, headers=api_headers) as resp:
            if resp.status != 200 or not await resp.read():
                raise BenchError(f"action API: HTTP {resp.status}")
        api = time.perf_counter() - started
        plain = await timed_post(session, direct.url, body(direct.model))
        await post(session, f"{setup.base('mock')}/_script", script)
        started = time.perf_counter()
        payload = await post(session, gate.url, body(gate.model))
        elapsed = time.perf_counter() - started
        check_answer(gate.name, payload, executions=1)
        if i >= warmup:
            direct.samples["tool_direct"].append(plain)
            direct.samples["action_api"].append(api)
            gate.samples["tool"].append(elapsed)


async def load(
    session: aiohttp.ClientSession, route: Route, concurrency: int, seconds: float
) -> tuple[float, int, list[float], float]:
    """Closed-loop load on one route: (requests/s, errors, sorted latencies, client CPU %)."""
    data = body(route.model)

    async def call() -> None:
        await post(session, route.url, data)

    phase = await run_phase(call, concurrency=concurrency, duration_s=seconds, warmup_s=0)
    return phase.rate, phase.errors, phase.latencies_s, phase.client_cpu_pct


async def throughput(
    session: aiohttp.ClientSession, route: Route, args: argparse.Namespace, noise: Noise
) -> dict[str, float]:
    """Warm-up, then the measured window with the server's and other processes' CPU use."""
    await load(session, route, args.concurrency, args.warmup)
    cpu_before = cpu_seconds(route.service.pid)
    noise.start()
    started = time.perf_counter()
    rate, errors, latencies, client_cpu = await load(
        session, route, args.concurrency, args.duration
    )
    elapsed = time.perf_counter() - started
    return {
        "rps": rate,
        "errors": errors,
        "load_p50": percentile(latencies, 50) * 1000,
        "load_p99": percentile(latencies, 99) * 1000,
        "client_cpu": client_cpu,
        "server_cpu": 100 * (cpu_seconds(route.service.pid) - cpu_before) / elapsed,
        "other_cpu": noise.other_pct(),
    }


# --- profile ------------------------------------------------------------------------------------

PROFILE_RATE = 200
_CLI = "(gateway/cli/main.py:"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def _label(frame: str) -> tuple[str, str]:
    """(``function (file:line)``, package) of one py-spy frame; repo files relative."""
    if not (m := _FRAME.match(frame)):
        return frame, "?"
    path = m["file"]
    if "site-packages/" in path:
        short = path.split("site-packages/", 1)[1]
        package = short.split("/", 1)[0].removesuffix(".py")
    elif path.startswith(str(ROOT)):
        short = os.path.relpath(path, ROOT)
        package = short.split("/", 1)[0]
    else:
        short, package = Path(path).name, "stdlib:" + Path(path).stem
    return f"{m['func']} ({short}:{m['line']})", package


def summarize_profile(raw: Path, seconds: float) -> str:
    """Where actiongate spends its samples: threads, then the event loop by package and function.

    "attributed" charges each event-loop sample to the deepest ``gateway/`` frame on its stack:
    the gateway function whose own code, or a library function it calls directly, was running.
    """
    threads: dict[str, set[str]] = defaultdict(set)
    main = 0
    by_package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    attributed: Counter[str] = Counter()
    callees: dict[str, Counter[str]] = defaultdict(Counter)
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        first, *rest = stack.split(";")
        thread_id, _, name = first.partition(": ")  # "thread (ID): NAME"
        threads[re.sub(r"-\d+", "", name)].add(thread_id)
        if name != "MainThread" or not rest:
            continue
        main += (count := int(count_text))
        frames = [_label(f) for f in rest]
        by_package[frames[-1][1]] += count
        # cli.py only starts uvicorn: its frames sit under every sample, so they are skipped.
        ours = [
            i for i, (label, pkg) in enumerate(frames) if pkg == "gateway" and _CLI not in label
        ]
        for label in {frames[i][0] for i in ours}:
            inclusive[label] += count
        if ours:
            owner = frames[ours[-1]][0]
            attributed[owner] += count
            below = frames[ours[-1] + 1] if ours[-1] + 1 < len(frames) else None
            callee = f"{below[1]}: {below[0].split(' (')[0]}" if below else "(own code)"
            callees[owner][callee] += count
    threads.pop("MainThread", None)
    if not main:
        return "py-spy recorded no sample of the event-loop thread."

    def pct(n: int) -> str:
        return f"{100 * n / main:.1f} %"

    def core(n: int) -> str:
        return f"{100 * n / (seconds * PROFILE_RATE):.0f} % of a core"

    others = ", ".join(f"{len(ids)} x {name}" for name, ids in threads.items()) or "none"

    def mostly(label: str) -> str:
        return "; ".join(f"{c} {pct(k)}" for c, k in callees[label].most_common(3))

    hot = [[f, pct(n), pct(inclusive[f]), mostly(f)] for f, n in attributed.most_common(15)]
    return "\n".join(
        [
            f"py-spy at {PROFILE_RATE} Hz for {seconds:g} s. The event-loop thread was active "
            f"(running, or waiting for the GIL) {core(main)}; the shares below are of its "
            f"samples. Other threads seen: {others} (py-spy counts a thread blocked in C as "
            "active, so their samples are left out).",
            "",
            markdown_table(
                ["leaf frame's package", "share"],
                [[package, pct(n)] for package, n in by_package.most_common(10)],
            ),
            "",
            markdown_table(
                ["gateway/ function", "attributed", "inclusive", "mostly in (attributed)"], hot
            ),
            "",
            f"Event-loop samples under a gateway/ frame: {pct(sum(attributed.values()))}; the "
            "rest is uvicorn, starlette/fastapi and the event loop outside gateway calls.",
        ]
    )


def start_py_spy(py_spy: Path, pid: int, seconds: int, raw: Path) -> Popen[bytes]:
    """py-spy recording ``pid``: collapsed stacks per thread, by function.

    Not ``--nonblocking``: reading a process while it runs gives torn stacks under uvloop.
    """
    cmd = [str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds), "--rate"]
    cmd += [str(PROFILE_RATE), "--format", "raw", "--full-filenames", "--function", "--threads"]
    with raw.with_suffix(".log").open("wb") as out:
        return start([*cmd, "--output", str(raw)], out)


def read_profile(spy: Popen[bytes], raw: Path, seconds: int, keep: str | None) -> str:
    if spy.returncode != 0 or not raw.exists():
        return f"py-spy failed: {raw.with_suffix('.log').read_text(errors='replace')[-500:]}"
    if keep:
        Path(keep).write_bytes(raw.read_bytes())
    return summarize_profile(raw, seconds)


async def profile(
    session: aiohttp.ClientSession, gate: Route, args: argparse.Namespace, work: Path
) -> str:
    """Record actiongate with py-spy while ``args.concurrency`` clients load it."""
    py_spy = Path(args.bench_venv) / "bin" / "py-spy"
    if not py_spy.exists():
        return f"skipped: no {py_spy} (pip install -r bench/{REQUIREMENTS.name} into it)"
    raw, seconds = work / "py-spy.raw", int(args.profile_seconds)
    spy = start_py_spy(py_spy, gate.service.pid, seconds, raw)
    try:
        await asyncio.sleep(0.5)  # attaching takes a moment
        await load(session, gate, args.concurrency, seconds + 1)
        await asyncio.to_thread(spy.wait, 30)
    finally:
        stop(spy)
    return read_profile(spy, raw, seconds, args.profile_output)


# --- the run ------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, work: Path) -> Setup:
    """Start everything and run the phases; the results end up in the returned setup."""
    cpus = cpu_placement()
    pin_to_cpu(cpus[0])
    setup = start_servers(args, work, cpus)
    watches = [asyncio.create_task(watch_rss(r.service.pid, r.peak_kb)) for r in setup.routes]
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(30)
        ) as session:
            log("waiting for the servers")
            await start_all(session, setup)
            gc.collect()
            gc.freeze()  # the benchmark's own long-lived objects stay out of its collections
            routes = setup.routes
            noise = Noise([s.pid for s in setup.services if s.process.poll() is None])
            log(f"sequential: {args.requests} x {len(routes)} routes, plain and streamed")
            noise.start()
            await sequential(session, routes, args.requests, warmup=50)
            setup.noise["sequential"] = noise.other_pct()
            log(f"tool round trips: {args.tool_requests}")
            noise.start()
            await tool_round_trips(session, setup, args.tool_requests, warmup=30)
            setup.noise["tool round trips"] = noise.other_pct()
            loaded = [*routes, setup.loop] if setup.loop is not None else routes
            for route in loaded:
                if route.name == "direct":
                    pin_tree(route.service.pid, cpus[1])  # the server under test gets a CPU
                for attempt in range(1 + args.retries):
                    log(f"throughput: {route.name}, {args.concurrency} clients, try {attempt + 1}")
                    # The mock keeps every request body: clear it so that it does not slow down.
                    for mock in ("mock", "tools"):
                        await post(session, f"{setup.base(mock)}/_reset", b"{}")
                    result = await throughput(session, route, args, noise)
                    rss = sum(status_kb(p, "VmRSS") for p in tree(route.service.pid)) * 1024 / 1e6
                    log(
                        f"  {result['rps']:,.0f} req/s, others {result['other_cpu']:.0f} % of a "
                        f"core, server RSS now {rss:.1f} MB"
                    )
                    if result["other_cpu"] < route.results.get("other_cpu", math.inf):
                        route.results.update(result)  # keep the least disturbed window
                    if result["other_cpu"] <= NOISY:
                        break
                gateway_cpu = cpus[1] if args.workers == 1 else None
                pin_tree(route.service.pid, cpus[0] if route.name == "direct" else gateway_cpu)
            for route in routes:
                hwm = sum(status_kb(p, "VmHWM") for p in tree(route.service.pid))
                route.results["rss_mb"] = max(hwm, route.peak_kb[0]) * 1024 / 1e6
            setup.profile = "skipped (--skip-profile)"
            if not args.skip_profile:
                log(f"profiling actiongate for {args.profile_seconds:g} s")
                target = setup.loop if args.profile_load == "tools" and setup.loop else routes[1]
                setup.profile = await profile(session, target, args, work)
    finally:
        for task in watches:
            task.cancel()
        for service in reversed(setup.services):
            stop(service.process)
    with contextlib.closing(sqlite3.connect(work / "actiongate.db")) as db:
        for table in ("executions", "conversations"):
            setup.db_rows[table] = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return setup


# --- the report ---------------------------------------------------------------------------------


def ms(route: Route, key: str, pct: float) -> float:
    return percentile(sorted(route.samples[key]), pct) * 1000


def target(value: float, limit: float, unit: str, *, at_most: bool = True, digits: int = 0) -> str:
    met = value <= limit if at_most else value >= limit
    return f"{'≤' if at_most else '≥'} {limit:,.{digits}f} {unit}: {'met' if met else 'NOT met'}"


def table(args: argparse.Namespace, setup: Setup) -> str:
    """One row per metric, one column per route, and actiongate's targets."""
    routes = {r.name: r for r in setup.routes}
    direct, gate, litellm = routes["direct"], routes["actiongate"], routes.get("litellm")
    no_tool_loop = "n/a (no server-side tool loop)"

    def row(
        metric: str, cell: Callable[[Route], str], first: str = "", goal: str = ""
    ) -> list[str]:
        last = cell(litellm) if litellm else "not run"
        return [metric, first or cell(direct), cell(gate), last, goal]

    def added(key: str, pct: float) -> Callable[[Route], str]:
        return lambda r: f"{ms(r, key, pct) - ms(direct, key, pct):+.2f}"

    def result(fmt: str, *keys: str) -> Callable[[Route], str]:
        return lambda r: fmt.format(*(r.results[k] for k in keys))

    def per_request(r: Route) -> str:
        """The server's CPU cost per request, and the rate that cost allows on one core."""
        cpu, rps = r.results["server_cpu"] / 100, r.results["rps"]
        return f"{1e6 * cpu / rps:.0f}; {rps / cpu:,.0f}" if cpu and rps else "n/a"

    two = 2 * ms(direct, "tool_direct", 50)
    tool50, tool99 = ms(gate, "tool", 50), ms(gate, "tool", 99)
    rss, rps = gate.results["rss_mb"], gate.results["rps"]
    rows = [
        row(
            "Completion without tools, p50 / p99 (ms)",
            lambda r: f"{ms(r, 'plain', 50):.2f} / {ms(r, 'plain', 99):.2f}",
        ),
        row(
            "Added latency without tools, p50 (ms)",
            added("plain", 50),
            "—",
            target(ms(gate, "plain", 50) - ms(direct, "plain", 50), 0.4, "ms", digits=2),
        ),
        row("Added latency without tools, p99 (ms)", added("plain", 99), "—"),
        [
            "One tool round trip, p50 / p99 (ms)",
            f"2 x {two / 2:.2f} (p50)",
            f"{tool50:.2f} / {tool99:.2f}",
            no_tool_loop,
            "",
        ],
        [
            "Added per tool round trip, p50 (ms): rt - 2 x direct",
            "—",
            f"{tool50 - two:+.2f}",
            no_tool_loop,
            target(tool50 - two, 1.0, "ms", digits=1),
        ],
        row("Streaming time to first token, p50 (ms)", lambda r: f"{ms(r, 'ttft', 50):.2f}"),
        row("Streaming time to first token added, p50 (ms)", added("ttft", 50), "—"),
        row(
            f"Requests/s, {args.concurrency} clients, {args.duration:g} s",
            result("{:,.0f}", "rps"),
            goal=target(rps, 5000, "req/s", at_most=False),
        ),
        row("… latency p50 / p99 (ms)", result("{:.1f} / {:.1f}", "load_p50", "load_p99")),
        row("… errors", result("{:.0f}", "errors")),
        row("… server CPU, % of a core (direct: the mock)", result("{:.0f} %", "server_cpu")),
        row("… server CPU per request (µs); req/s at 100 % of a core", per_request),
        row("… benchmark client CPU, % of a core", result("{:.0f} %", "client_cpu")),
        row("… other processes' CPU (noise), % of a core", result("{:.0f} %", "other_cpu")),
        row(
            "Peak RSS of the proxy process tree (MB)",
            result("{:.1f}", "rss_mb"),
            "n/a (no proxy)",
            target(rss, 70, "MB"),
        ),
    ]
    if (loop := setup.loop) is not None and loop.results:
        lr = loop.results
        cpu = lr["server_cpu"] / 100
        rows[-1:-1] = [
            [
                f"Tool loops/s (model -> action -> model), {args.concurrency} clients",
                "—",
                f"{lr['rps']:,.0f}",
                no_tool_loop,
                target(lr["rps"], 2000, "loops/s", at_most=False),
            ],
            [
                "… latency p50 / p99 (ms); errors",
                "—",
                f"{lr['load_p50']:.1f} / {lr['load_p99']:.1f}; {lr['errors']:.0f}",
                no_tool_loop,
                "",
            ],
            [
                "… server CPU per tool loop (µs); other processes' CPU",
                "—",
                f"{1e6 * cpu / lr['rps']:.0f}; {lr['other_cpu']:.0f} %" if lr["rps"] else "n/a",
                no_tool_loop,
                "",
            ],
        ]
    version = f" {setup.litellm_version}" if litellm else " (not run: see the notes)"
    headers = ["Metric", "direct", "actiongate", f"LiteLLM proxy{version}", "actiongate target"]
    return markdown_table(headers, rows)


def report(args: argparse.Namespace, setup: Setup) -> str:
    """The Markdown report: how it was run, the table, notes and the profile."""
    direct = setup.routes[0]
    bench_cpu, server_cpu = setup.cpus
    placement = (
        f"benchmark client, mock and action API on CPU {bench_cpu}; the proxy under test "
        f"(direct throughput run: the mock) alone on CPU {server_cpu}"
        if server_cpu is not None
        else "not pinned (fewer than 2 CPUs)"
    )
    packages = ("actiongate", "fastapi", "uvicorn", "aiohttp")
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in packages)
    noise = ", ".join(f"{phase} {pct:.0f} %" for phase, pct in setup.noise.items())
    disturbed = any(pct > NOISY for pct in setup.noise.values())
    litellm = f"not run: {setup.litellm_note}" if setup.litellm_note else LITELLM_NOTE
    rows = setup.db_rows
    return "\n".join(
        [
            "## actiongate vs direct vs LiteLLM's proxy (zero-latency mock upstream, 127.0.0.1)",
            "",
            f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            f"- command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}",
            f"- machine: {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
            f"{platform.python_version()}; {versions}",
            f"- placement: {placement}",
            f"- sequential: {args.requests} requests per route, plain and streamed, "
            f"interleaved, after 50 warm-up rounds; {args.tool_requests} tool round trips; "
            f"load: {args.concurrency} closed-loop clients, {args.warmup:g} s warm-up + "
            f"{args.duration:g} s per route, run up to {args.retries} more times when disturbed "
            "(the least disturbed run is reported)",
            f"- other processes' CPU during the sequential phases (% of a core): {noise}"
            + (" (disturbed: latencies are pessimistic)" if disturbed else ""),
            "",
            table(args, setup),
            "",
            "Notes:",
            "- Added = pNN(route) - pNN(direct), from the same interleaved loop. A tool round "
            "trip makes two upstream calls and one action call, so its added latency is "
            "rt - 2 x direct: the gateway's two hops, the action's HTTP call (the action API "
            f"alone answers a direct GET in {ms(direct, 'action_api', 50):.2f} ms p50) and its "
            "log record.",
            f"- actiongate: one uvicorn worker, execution log on (SQLite in WAL mode, temp dir); "
            f"rows at the end: {rows.get('executions', 0)} executions (the tool round trips, "
            f"warm-up included), {rows.get('conversations', 0)} conversations.",
            f"- LiteLLM: {litellm}",
            "- Requests/s: the proxy has a CPU to itself while the client, the mock and the "
            "action API share the other; proxy CPU near 100 % means the proxy set the rate. "
            "When other processes took CPU time, the rate the server's CPU cost per request "
            "allows on a whole core is the better estimate of one worker's capacity.",
            "",
            f"### Profile: actiongate under {args.concurrency} clients",
            "",
            setup.profile,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Parse options, run the phases, print the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured s per load run")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded s per load run")
    parser.add_argument("--concurrency", type=int, default=32, help="clients in the load runs")
    parser.add_argument("--requests", type=int, default=500, help="sequential samples per route")
    parser.add_argument("--tool-requests", type=int, default=300, help="tool round trips")
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help=f"load windows run again when other processes used over {NOISY:g} %% of a core",
    )
    parser.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument(
        "--bench-venv",
        default="/tmp/litellm-venv",
        help="venv with litellm[proxy] and py-spy (made from requirements-bench.txt if missing)",
    )
    parser.add_argument("--skip-profile", action="store_true", help="no py-spy run")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument("--profile-output", metavar="FILE", help="keep py-spy's raw stacks")
    parser.add_argument(
        "--profile-load",
        choices=["tools", "plain"],
        default="tools",
        help="profile under tool loops (default) or plain completions",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="actiongate serve --workers (default 1)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as work:
        try:
            setup = asyncio.run(asyncio.wait_for(measure(args, Path(work)), MAX_RUN_S))
        except BenchError as e:
            sys.exit(f"bench_proxy: {e}")
        except TimeoutError:
            sys.exit(f"bench_proxy: gave up after {MAX_RUN_S} s")
    print(report(args, setup))
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
