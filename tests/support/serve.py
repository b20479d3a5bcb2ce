"""A real ``actiongate serve`` process for end-to-end tests, with its upstream and action API.

The scripted upstream and the sample customer API (``examples/``) run on an event loop in a
background thread: a test using the synchronous openai client blocks its own thread while the
gateway process calls them, so they must not share the test's loop. The gateway runs as a
subprocess on a free port with a SQLite database of its own, configured from
``examples/demo.yaml`` pointed at those two servers and given fresh credentials.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from aiohttp import web

from examples import customer_api
from examples.scripted_upstream import ScriptedUpstream

__all__ = [
    "DEMO_CONFIG",
    "ActionAPI",
    "Credentials",
    "GatewayProcess",
    "LoopThread",
    "Received",
    "demo_config",
    "free_port",
    "running_action_api",
    "start_gateway",
]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "examples" / "demo.yaml"
DEMO_API = "http://127.0.0.1:8092"
"""Where ``examples/demo.yaml`` expects the sample customer API."""
ACTIONGATE = Path(sys.executable).parent / "actiongate"
POLL_S = 0.05


class LoopThread:
    """An event loop in a daemon thread that hosts servers for synchronous and async tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._stack = AsyncExitStack()
        self._thread = threading.Thread(target=self._run, name="e2e-servers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run a coroutine on the thread's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout_s)

    def call(self, fn: Any, *args: Any) -> Any:
        """Call a plain function on the loop's thread (for state its handlers also touch)."""

        async def on_loop() -> Any:
            return fn(*args)

        return self.run(on_loop())

    def enter(self, context: AbstractAsyncContextManager[T]) -> T:
        """Enter an async context manager on the loop; :meth:`close` exits it."""
        return self.run(self._stack.enter_async_context(context))

    def close(self) -> None:
        """Exit every entered context, then stop the loop and its thread."""
        try:
            self.run(self._stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


# --- the action API -------------------------------------------------------------------------


@dataclass
class Received:
    """One request as it reached the action API, before any decoding."""

    method: str
    raw_path: str
    """Path and query exactly as sent (percent-encoding kept)."""
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class ActionAPI:
    """The sample customer API, mounted under ``/crm``, recording raw requests."""

    base_url: str
    """Where ``examples/demo.yaml``'s actions should point (ends in ``/crm``)."""
    received: list[Received] = field(default_factory=list)

    def paths(self) -> list[str]:
        """``METHOD raw_path`` of every request received, oldest first."""
        return [f"{r.method} {r.raw_path}" for r in self.received]


@dataclass(frozen=True)
class Credentials:
    """Fresh secret values for one run; none of them may end up in the database."""

    crm_key: str = field(default_factory=lambda: f"crm-{secrets.token_hex(8)}")
    orders_key: str = field(default_factory=lambda: f"orders-{secrets.token_hex(8)}")
    client_id: str = field(default_factory=lambda: f"billing-id-{secrets.token_hex(8)}")
    client_secret: str = field(default_factory=lambda: f"billing-secret-{secrets.token_hex(8)}")
    upstream_key: str = field(default_factory=lambda: f"up-{secrets.token_hex(8)}")
    client_key: str = field(default_factory=lambda: f"client-{secrets.token_hex(8)}")
    admin_token: str = field(default_factory=lambda: f"admin-{secrets.token_hex(16)}")

    def all(self) -> tuple[str, ...]:
        """Every credential value."""
        return (
            self.crm_key,
            self.orders_key,
            self.client_id,
            self.client_secret,
            self.upstream_key,
            self.client_key,
            self.admin_token,
        )

    def environ(self) -> dict[str, str]:
        """What the gateway process reads from its environment."""
        return {"ACTIONGATE_ADMIN_TOKEN": self.admin_token}


@asynccontextmanager
async def running_action_api(credentials: Credentials) -> AsyncIterator[ActionAPI]:
    """Serve :func:`examples.customer_api.create_app` under ``/crm`` on a free port."""
    api = ActionAPI(base_url="")

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        item = Received(request.method, request.raw_path, request.path, dict(request.headers), body)
        api.received.append(item)
        response: web.StreamResponse = await handler(request)
        return response

    root = web.Application(middlewares=[record])
    root.add_subapp(
        "/crm",
        customer_api.create_app(
            crm_key=credentials.crm_key,
            orders_key=credentials.orders_key,
            client_id=credentials.client_id,
            client_secret=credentials.client_secret,
        ),
    )
    runner = web.AppRunner(root, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        api.base_url = f"http://{host}:{port}/crm"
        yield api
    finally:
        await runner.cleanup()


# --- the config -----------------------------------------------------------------------------


def _repoint(node: Any, old: str, new: str) -> Any:
    if isinstance(node, str):
        return node.replace(old, new)
    if isinstance(node, dict):
        return {k: _repoint(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_repoint(v, old, new) for v in node]
    return node


def demo_config(
    upstream: ScriptedUpstream, api: ActionAPI, credentials: Credentials, database: str
) -> dict[str, Any]:
    """``examples/demo.yaml`` pointed at these servers, with these credentials and database."""
    config: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    config["actions"] = _repoint(config["actions"], DEMO_API, api.base_url)
    config["upstream"] = {
        **config["upstream"],
        "base_url": upstream.base_url,
        "api_key": credentials.upstream_key,
    }
    config["database"] = database
    config["secrets"] = {
        "CRM_KEY": credentials.crm_key,
        "ORDERS_KEY": credentials.orders_key,
        "BILLING_CLIENT_ID": credentials.client_id,
        "BILLING_CLIENT_SECRET": credentials.client_secret,
    }
    for agent in config["agents"]:
        agent["api_keys"] = [credentials.client_key]
    return config


# --- the gateway process --------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class GatewayProcess:
    """A running ``actiongate serve``."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    database: str
    db_path: Path
    output: Path
    """The process's stdout and stderr."""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL clients use."""
        return f"{self.url}/v1"

    def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        with httpx.Client(trust_env=False, timeout=5) as client:
            response = client.get(f"{self.url}/healthz")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Poll ``/healthz`` until it answers; fail early if the process exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"actiongate serve exited with {self.process.returncode}:\n{self.logs_text()}"
                )
            try:
                self.health()
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no /healthz answer:\n{self.logs_text()}") from None
                time.sleep(POLL_S)
            else:
                return

    def wait_log_stored(self, timeout_s: float = 10.0) -> None:
        """Wait until the log writer has stored every record submitted so far."""
        deadline = time.monotonic() + timeout_s
        while True:
            log = self.health()["log"]
            if log["queued"] == 0:
                assert log["dropped"] == 0 and log["write_errors"] == 0, log
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution log still has {log['queued']} records queued")
            time.sleep(POLL_S)

    def records(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """Stored execution records, newest first, as ``actiongate logs --json`` prints them."""
        if self.process.poll() is None:
            self.wait_log_stored()
        command = [str(ACTIONGATE), "logs", "--db", self.database, "--json", "--limit", "1000"]
        if conversation_id is not None:
            command += ["--conversation", conversation_id]
        done = subprocess.run(
            command, cwd=self.directory, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    def database_bytes(self) -> bytes:
        """The raw bytes of the SQLite database and its WAL files."""
        parts = sorted(self.db_path.parent.glob(self.db_path.name + "*"))
        return b"".join(p.read_bytes() for p in parts)

    def logs_text(self) -> str:
        """What the process printed."""
        return self.output.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout_s: float = 5.0) -> int:
        """SIGTERM, then wait for the exit; returns the exit status (killed and raises if late)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_gateway(
    directory: Path,
    config: dict[str, Any],
    environ: Mapping[str, str] | None = None,
    attempts: int = 3,
    args: Sequence[str] = (),
) -> GatewayProcess:
    """Write ``config`` to ``directory/config.yaml`` and start ``actiongate serve`` on it.

    The database is ``directory/gateway.db`` unless ``config`` names one; ``environ`` is added
    to this process's environment. A free port can be taken by someone else before the process
    binds it, so a failed start is retried.
    """
    directory.mkdir(parents=True, exist_ok=True)
    db_path = directory / "gateway.db"
    config.setdefault("database", f"sqlite:///{db_path}")
    database = str(config["database"])
    db_path = Path(database.removeprefix("sqlite:///"))
    config_path = directory / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {**os.environ, **(environ or {}), "PYTHONUNBUFFERED": "1"}
    for attempt in range(1, attempts + 1):
        port = free_port()
        output = directory / f"serve-{attempt}.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [
                    str(ACTIONGATE),
                    "serve",
                    "--config",
                    str(config_path),
                    "--port",
                    str(port),
                    *args,
                ],
                cwd=directory,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )
        gateway = GatewayProcess(process, port, directory, database, db_path, output)
        try:
            gateway.wait_ready()
        except RuntimeError:
            if attempt == attempts or "address already in use" not in gateway.logs_text():
                raise
        except BaseException:
            gateway.stop()
            raise
        else:
            return gateway
    raise AssertionError("unreachable")
