"""limits.redis: the rate limit, concurrency cap and circuit breaker shared by real processes
through the real Redis, the per-process fallback while Redis is unreachable, config checks, and
one call through the gateway app.

Redis is found at ``ACTIONGATE_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``); without it
these tests are skipped, unless ``ACTIONGATE_REQUIRE_REDIS`` is set, which makes them fail. Each
test works under a key prefix of its own and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from prometheus_client import REGISTRY

from gateway.definitions.config import LimitsConfig, parse_config
from gateway.engine.limits import Permit, busy_reason, open_reason, rate_reason
from gateway.engine.redis_limits import RedisLimits
from gateway.engine.runtime import open_limits
from gateway.errors import ConfigError
from gateway.extras import MissingExtra
from tests.support.gateway import running_gateway

ROOT = Path(__file__).resolve().parent.parent
REDIS_ENV = "ACTIONGATE_TEST_REDIS"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
RATE = "this conversation made"
OPEN = "failing right now"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis to test against; skips (or, with ACTIONGATE_REQUIRE_REDIS, fails) without one."""
    url = os.environ.get(REDIS_ENV, DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        reason = f"Redis at {url} unreachable ({type(e).__name__}: {e})"
        if os.environ.get("ACTIONGATE_REQUIRE_REDIS"):
            pytest.fail(f"{reason}; ACTIONGATE_REQUIRE_REDIS is set")
        pytest.skip(f"{reason}; set {REDIS_ENV} to test limits.redis")
    finally:
        client.close()
    return url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"actiongate-test:{uuid.uuid4().hex[:12]}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{name}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def limits_config(redis_url: str, prefix: str, **values: Any) -> dict[str, Any]:
    return {"redis": redis_url, "redis_prefix": prefix, **values}


# --- two real processes ---------------------------------------------------------------------


class Process:
    """A ``tests.support.limits_worker`` subprocess: one JSON command, one JSON reply."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.limits_worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.read() == {"ready": True}

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the worker exited with {self.proc.wait()}"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.read()

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        finally:
            with suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def pair(redis_url: str) -> Iterator[tuple[Process, Process]]:
    """Two worker processes, started once for the module (each test configures them)."""
    a = Process()
    try:
        b = Process()
    except BaseException:
        a.close()
        raise
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def both(pair: tuple[Process, Process], **command: Any) -> list[dict[str, Any]]:
    """Send ``command`` to both processes before reading either reply, so they run together."""
    for process in pair:
        process.send(**command)
    return [process.read() for process in pair]


def configure(pair: tuple[Process, Process], limits: dict[str, Any], **more: Any) -> None:
    assert both(pair, op="configure", limits=limits, **more) == [{}, {}]


def test_the_rate_limit_holds_across_two_processes(
    pair: tuple[Process, Process], redis_url: str, prefix: str
) -> None:
    configure(pair, limits_config(redis_url, prefix, rate=5, per_s=60))
    replies = both(pair, op="acquire", tool="api", conversation="support\x00c1", n=8)
    admitted = sum(len(r["permits"]) for r in replies)
    refused = [text for r in replies for text in r["refused"]]
    assert admitted == 5 and len(refused) == 11
    assert set(refused) == {rate_reason(LimitsConfig(rate=5, per_s=60))}
    # Another conversation has its own budget, in either process.
    other = pair[1].ask(op="acquire", tool="api", conversation="support\x00c2", n=1)
    assert len(other["permits"]) == 1


def test_the_concurrency_cap_is_shared_and_a_release_frees_a_slot_for_the_other(
    pair: tuple[Process, Process], redis_url: str, prefix: str
) -> None:
    a, b = pair
    configure(pair, limits_config(redis_url, prefix, concurrency=3))
    replies = both(pair, op="acquire", tool="api", conversation=None, n=4)
    assert sum(len(r["permits"]) for r in replies) == 3
    assert {text for r in replies for text in r["refused"]} == {busy_reason()}
    holder, other = (a, b) if replies[0]["permits"] else (b, a)
    held = (replies[0] if holder is a else replies[1])["permits"]
    assert other.ask(op="acquire", tool="api", conversation=None, n=1)["permits"] == []
    assert holder.ask(op="release", handles=[held[0]["handle"]], failed=False) == {}
    assert len(other.ask(op="acquire", tool="api", conversation=None, n=1)["permits"]) == 1


def test_a_slot_held_by_a_process_that_never_releases_ends_with_its_lease(
    pair: tuple[Process, Process], redis_url: str, prefix: str
) -> None:
    a, b = pair
    configure(pair, limits_config(redis_url, prefix, concurrency=1), lease_s=0.3)
    assert len(a.ask(op="acquire", tool="api", conversation=None, n=1)["permits"]) == 1
    assert b.ask(op="acquire", tool="api", conversation=None, n=1)["refused"] == [busy_reason()]
    # ``a`` never releases, as if it had died mid-call: the lease is what ends, on Redis's clock.
    asyncio.run(asyncio.sleep(0.35))
    assert len(b.ask(op="acquire", tool="api", conversation=None, n=1)["permits"]) == 1


def test_a_circuit_opened_in_one_process_refuses_in_the_other_then_lets_one_trial_through(
    pair: tuple[Process, Process], redis_url: str, prefix: str
) -> None:
    a, b = pair
    configure(pair, limits_config(redis_url, prefix, failures=2, cooldown_s=0.5))
    for _ in range(2):
        [permit] = a.ask(op="acquire", tool="api", conversation=None, n=1)["permits"]
        a.ask(op="release", handles=[permit["handle"]], failed=True)
    refused = b.ask(op="acquire", tool="api", conversation=None, n=1)["refused"]
    assert refused == [open_reason(0.5)] and OPEN in refused[0]
    assert b.ask(op="snapshot")["actions"]["api"]["circuit"] == "open"
    asyncio.run(asyncio.sleep(0.55))  # the cooldown, counted by Redis's clock
    replies = both(pair, op="acquire", tool="api", conversation=None, n=3)
    trials = [p for r in replies for p in r["permits"]]
    assert len(trials) == 1 and trials[0]["trial"] is True
    assert {text for r in replies for text in r["refused"]} == {open_reason(0.5)}
    holder = a if replies[0]["permits"] else b
    holder.ask(op="release", handles=[trials[0]["handle"]], failed=False)  # the API is back
    other = b if holder is a else a
    [after] = other.ask(op="acquire", tool="api", conversation=None, n=1)["permits"]
    assert after["trial"] is False
    assert other.ask(op="snapshot")["actions"]["api"]["circuit"] == "closed"


# --- Redis unreachable ------------------------------------------------------------------------


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_redis_down_falls_back_to_the_process_with_one_warning_and_the_metric(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://:pa55word-xyz@127.0.0.1:{closed_port()}/0"
    limits = RedisLimits(LimitsConfig(redis=url, rate=2, per_s=60))
    before = metric("actiongate_limits_fallback_total", op="acquire")
    caplog.set_level(logging.INFO, logger="actiongate.limits")
    results = [await limits.acquire("api", "support\x00c1") for _ in range(3)]
    assert [isinstance(r, Permit) and r.lease is None for r in results] == [True, True, False]
    assert results[2] == rate_reason(limits.config)  # the same limit, counted in the process
    for permit in results[:2]:
        assert isinstance(permit, Permit)
        await limits.release(permit, failed=False)
    assert limits.backend == "local-fallback"
    assert metric("actiongate_limits_fallback_total", op="acquire") == before + 3
    assert metric("actiongate_limits_backend", backend="local-fallback") == 1
    assert metric("actiongate_limits_backend", backend="redis") == 0
    records = [r for r in caplog.records if r.name == "actiongate.limits"]
    assert [r.levelname for r in records] == ["WARNING"]
    message = records[0].getMessage()
    assert f"redis://127.0.0.1:{url.rsplit(':', 1)[1]}" in message and "unreachable" in message
    assert "pa55word" not in caplog.text
    await limits.close()


class Forwarder:
    """A TCP proxy in front of Redis that can be stopped and started again on its port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self.writers.discard(writer)


@pytest.fixture
async def forwarder(redis_url: str) -> AsyncIterator[Forwarder]:
    target = urlsplit(redis_url)
    proxy = Forwarder((target.hostname or "127.0.0.1", target.port or 6379))
    await proxy.start()
    yield proxy
    if proxy.server is not None and proxy.server.is_serving():
        await proxy.stop()


async def test_an_outage_falls_back_retries_after_the_back_off_and_recovers(
    forwarder: Forwarder, redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    db = urlsplit(redis_url).path.strip("/") or "0"
    config = LimitsConfig(redis=f"redis://127.0.0.1:{forwarder.port}/{db}", redis_prefix=prefix)
    limits = RedisLimits(config, retry_after_s=2.0, clock=clock)
    caplog.set_level(logging.INFO, logger="actiongate.limits")
    shared = await limits.acquire("api", "c1")
    assert isinstance(shared, Permit) and shared.lease is not None and limits.backend == "redis"
    released = metric("actiongate_limits_fallback_total", op="release")

    await forwarder.stop()
    local = await limits.acquire("api", "c1")  # Redis fails: counted in the process
    assert isinstance(local, Permit) and local.lease is None
    await limits.release(shared, failed=False)  # a Redis permit is not released locally
    assert metric("actiongate_limits_fallback_total", op="release") == released + 1
    await forwarder.start()
    connections = forwarder.connections
    clock.now += 1.0  # inside the back-off: Redis is not tried on every call
    during = await limits.acquire("api", "c1")
    assert isinstance(during, Permit) and during.lease is None
    assert forwarder.connections == connections and limits.backend == "local-fallback"

    clock.now += 1.5
    back = await limits.acquire("api", "c1")
    assert isinstance(back, Permit) and back.lease is not None and limits.backend == "redis"
    assert metric("actiongate_limits_backend", backend="redis") == 1
    for permit in (local, during, back):
        await limits.release(permit, failed=False)
    levels = [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == "actiongate.limits"
    ]
    assert [level for level, _ in levels] == ["WARNING", "INFO"]
    assert "answers again" in levels[1][1]
    await limits.close()


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:6379/0", "the scheme must be redis:// or rediss://"),
        ("redis:///0", "no host"),
        ("redis://:s3cret-pw@127.0.0.1:99999/0", "not a URL"),
        ("redis://:s3cret-pw@127.0.0.1:6379/cache", "database number"),
        (6379, "valid string"),
    ],
)
def test_a_bad_limits_redis_names_the_field_and_never_the_password(
    value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"limits": {"redis": value}}, environ={})
    message = str(caught.value)
    assert message.startswith("config: limits.redis: ") and expected in message
    assert "s3cret" not in message


def test_good_redis_urls_and_the_password_stays_out_of_the_repr() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://user:s3cret-pw@cache.internal:6380/2"):
        config = parse_config({"limits": {"redis": url}}, environ={})
        assert config.limits.redis == url and "s3cret" not in repr(config.limits)
    unset = parse_config({"limits": {"redis": "${REDIS_URL:-}"}}, environ={})
    assert unset.limits.redis is None  # an empty variable: limits stay per process
    with pytest.raises(ConfigError, match=r"limits\.redis_prefix"):
        parse_config({"limits": {"redis_prefix": "has space"}}, environ={})


def test_limits_redis_without_the_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("redis", "redis.asyncio", "redis.asyncio.retry", "redis.backoff"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtra) as caught:
        open_limits(LimitsConfig(redis=DEFAULT_REDIS_URL))
    assert str(caught.value) == (
        "limits.redis needs the 'redis' extra: pip install 'actiongate[redis]'"
    )
    assert open_limits(LimitsConfig()).backend == "local"  # without limits.redis: no Redis


# --- through the gateway ----------------------------------------------------------------------


async def test_the_gateway_with_limits_redis_refuses_the_call_past_the_rate(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    settings = {"limits": limits_config(redis_url, prefix, rate=2, per_s=60)}
    async with running_gateway(tmp_path, settings=settings) as gw:
        order = {"name": "look_up_order", "arguments": {"order_number": "A-1"}}
        rounds = [{"tool_calls": [order]}] * 3  # one call a round: the third is the one refused
        gw.upstream.script([*rounds, {"content": "Done."}])
        data = (await gw.chat(messages=[{"role": "user", "content": "order?"}])).json()
        outcomes = [e["outcome"] for e in data["actiongate"]["executions"]]
        assert outcomes == ["success", "success", "rejected"]
        told = gw.upstream.requests[3]["messages"][-1]
        assert told["role"] == "tool"
        assert rate_reason(LimitsConfig(rate=2, per_s=60)) in told["content"]
        assert len(gw.api.received) == 2
        health = (await gw.client.get("/healthz")).json()
        assert health["limits"] == "redis"
        assert health["actions"]["look_up_order"]["circuit"] == "closed"
    client = redis.Redis.from_url(redis_url)
    try:
        [key] = client.scan_iter(match=f"{prefix}rate:*")  # hashed: no conversation id in Redis
        assert 0 < client.pttl(key) <= 61_000  # expires once the window has passed
    finally:
        client.close()
