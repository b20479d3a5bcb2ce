"""The limits of :mod:`gateway.engine.limits`, shared by every process through Redis.

With ``limits.redis: redis://HOST:PORT/DB`` the circuit breaker, the concurrency cap and the
conversation rate limit hold across workers and replicas, with the same rules and refusal texts
as the per-process :class:`~gateway.engine.limits.Limits`. Each ``acquire`` and each ``release``
is one Lua script, so one round trip, and atomic across processes. Times come from the Redis
server (``TIME`` inside the scripts), so the replicas' clocks need not agree.

Keys (``P`` is ``limits.redis_prefix``, ``actiongate:`` by default):

- ``P breaker:TOOL``, a hash: ``failures`` in a row, ``opened_at``, and the running ``trial``
  permit with its ``trial_until``. It disappears when a success resets it; otherwise it expires
  a day after its last failure.
- ``P running:TOOL``, a sorted set of running permit ids scored by their lease's end
  (:data:`LEASE_S`): a process that dies mid-call holds its slot (or the trial) only until then.
- ``P rate:HASH``, a sorted set of the conversation's calls scored by time (the sliding window),
  expiring ``per_s`` after its last call. ``HASH`` is a SHA-256 of the agent and conversation id:
  conversation ids are not stored in Redis.

When Redis does not answer within :data:`TIMEOUT_S` (or fails in any way), the call is counted
by a per-process :class:`Limits` instead: never an error for the customer. That logs one
warning per outage (and an info line when Redis answers again), counts
``actiongate_limits_fallback_total`` and moves ``actiongate_limits_backend`` to
``local-fallback``. Redis is tried again after :data:`RETRY_AFTER_S`, not on every call. A
permit goes back where it came from: the release of a Redis permit while Redis is down is
dropped (its lease ends its slot, or its trial) and a local permit is always released locally.
Keys of one call live on different hash slots, so Redis Cluster is not supported.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

from gateway.definitions.actions import MAX_TIMEOUT_S
from gateway.definitions.config import LimitsConfig
from gateway.engine.limits import (
    Backend,
    Limits,
    Permit,
    busy_reason,
    open_reason,
    rate_reason,
)
from gateway.extras import require_extra
from gateway.telemetry import metrics

__all__ = ["LEASE_S", "RETRY_AFTER_S", "TIMEOUT_S", "RedisLimits", "describe_url"]

logger = logging.getLogger("actiongate.limits")

TIMEOUT_S = 0.25
"""Connect and read timeout for one script: past it, the call uses the process's limits."""
RETRY_AFTER_S = 2.0
"""After a failure, how long every call uses the process's limits before Redis is tried again."""
LEASE_S = MAX_TIMEOUT_S + 15.0
"""How long a running permit holds its slot at most: an action's whole deadline, and a margin."""
_BREAKER_TTL_MS = 86_400_000

# KEYS: breaker, running[, rate]. ARGV: permit id, cooldown_s, concurrency, rate, per_s, lease_s.
# Returns {code, detail, running, failures, open}: code 0 admitted (detail 1 for a trial),
# 1 circuit open (detail: seconds to wait), 2 concurrency cap, 3 rate limit.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'opened_at', 'trial_until', 'failures')
local failures = tonumber(b[3]) or 0
local trial = 0
if b[1] then
  local wait = tonumber(b[1]) + tonumber(ARGV[2]) - now
  if wait > 0 or (b[2] and tonumber(b[2]) > now) then
    return {1, string.format('%.3f', wait), -1, failures, 1}
  end
  trial = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.6f', now))
local running = redis.call('ZCARD', KEYS[2])
if running >= tonumber(ARGV[3]) then
  return {2, '0', running, failures, trial}
end
if #KEYS == 3 then
  local per_s = tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%.6f', now - per_s))
  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then
    return {3, '0', running, failures, trial}
  end
  redis.call('ZADD', KEYS[3], string.format('%.6f', now), ARGV[1])
  redis.call('PEXPIRE', KEYS[3], math.ceil(per_s * 1000) + 1000)
end
local lease = tonumber(ARGV[6])
local until_ = string.format('%.6f', now + lease)
redis.call('ZADD', KEYS[2], until_, ARGV[1])
redis.call('PEXPIRE', KEYS[2], math.ceil(lease * 1000))
if trial == 1 then
  redis.call('HSET', KEYS[1], 'trial', ARGV[1], 'trial_until', until_)
end
return {0, tostring(trial), running + 1, failures, trial}
"""

# KEYS: breaker, running. ARGV: permit id, failed (0/1), trial (0/1), failures, breaker ttl ms.
# Returns {running, failures, open}.
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREM', KEYS[2], ARGV[1])
local running = redis.call('ZCARD', KEYS[2])
if ARGV[3] == '1' and redis.call('HGET', KEYS[1], 'trial') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'trial', 'trial_until')
end
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], 'failures', 'opened_at')
  return {running, 0, 0}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local is_open = redis.call('HEXISTS', KEYS[1], 'opened_at')
if ARGV[3] == '1' or failures >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'opened_at', string.format('%.6f', now))
  is_open = 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {running, failures, is_open}
"""


def describe_url(url: str) -> str:
    """``redis://HOST:PORT/DB`` without the user and password, for log lines."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path or '/0'}"


def _state(running: int, failures: int, is_open: int) -> dict[str, object]:
    return {
        "running": running,
        "consecutive_failures": failures,
        "circuit": "open" if is_open else "closed",
    }


class RedisLimits:
    """Limits counted in Redis, and in this process while Redis cannot be reached."""

    def __init__(
        self,
        config: LimitsConfig,
        *,
        client: Any = None,
        lease_s: float = LEASE_S,
        retry_after_s: float = RETRY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Connect lazily to ``config.redis`` (``client``: an existing ``redis.asyncio`` one).

        Raises:
            MissingExtra: the ``redis`` package is not installed.
        """
        if not config.redis:
            raise ValueError("RedisLimits needs limits.redis")
        self.config = config
        self._where = describe_url(config.redis)
        self._password = urlsplit(config.redis).password
        self._redis = client if client is not None else _connect(config.redis)
        self._errors: tuple[type[Exception], ...] = (*_redis_errors(), OSError, TimeoutError)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)
        self._local = Limits(config)
        self._lease_s = lease_s
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._down_until: float | None = None
        self._seen: dict[str, dict[str, object]] = {}
        metrics.limits_backend("redis")

    @property
    def backend(self) -> Backend:
        """``redis``, or ``local-fallback`` during an outage."""
        return "redis" if self._down_until is None else "local-fallback"

    async def close(self) -> None:
        """Close the connections to Redis."""
        await self._redis.aclose()

    async def acquire(self, tool: str, conversation_id: str | None) -> Permit | str:
        """A :class:`Permit`, or the reason (for the model) why the call may not run now."""
        if self._usable():
            lease = uuid4().hex
            keys = [self._key("breaker", tool), self._key("running", tool)]
            if conversation_id is not None:
                digest = hashlib.sha256(conversation_id.encode()).hexdigest()[:32]
                keys.append(self._key("rate", digest))
            cfg = self.config
            args = [lease, cfg.cooldown_s, cfg.concurrency, cfg.rate, cfg.per_s, self._lease_s]
            reply = await self._call(self._acquire, keys, args)
            if reply is not None:
                return self._admitted(tool, lease, reply)
        metrics.limits_fallback("acquire")
        return await self._local.acquire(tool, conversation_id)

    async def release(self, permit: Permit, *, failed: bool) -> None:
        """Record a call's result where its permit came from."""
        if permit.lease is None:
            await self._local.release(permit, failed=failed)
            return
        reply = None
        if self._usable():
            keys = [self._key("breaker", permit.tool), self._key("running", permit.tool)]
            args = [permit.lease, int(failed), int(permit.trial), self.config.failures]
            reply = await self._call(self._release, keys, [*args, _BREAKER_TTL_MS])
        if reply is None:
            metrics.limits_fallback("release")  # the lease ends on its own
            return
        running, failures, is_open = (int(v) for v in reply)
        self._see(permit.tool, _state(running, failures, is_open))

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Per-action state as this process last saw it in Redis (during an outage: its own)."""
        if self._down_until is not None:
            return self._local.snapshot()
        return dict(self._seen)

    # --- internals ------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.config.redis_prefix}{kind}:{name}"

    def _admitted(self, tool: str, lease: str, reply: list[Any]) -> Permit | str:
        code, detail = int(reply[0]), reply[1]
        running, failures, is_open = (int(v) for v in reply[2:])
        if code == 1:
            before = self._seen.get(tool, _state(0, failures, 1))
            self._see(tool, {**before, "consecutive_failures": failures, "circuit": "open"})
            return open_reason(float(detail))
        self._see(tool, _state(running, failures, is_open))
        if code == 2:
            return busy_reason()
        if code == 3:
            return rate_reason(self.config)
        return Permit(tool, trial=detail in {b"1", "1"}, lease=lease)

    def _see(self, tool: str, state: dict[str, object]) -> None:
        """Remember an action's shared state; the circuit gauge follows what Redis says, so a
        circuit another process opened or closed shows here too after this process's next call."""
        before = self._seen.get(tool)
        if before is None or before["circuit"] != state["circuit"]:
            metrics.circuit(tool, state["circuit"] == "open")
        self._seen[tool] = state

    def _usable(self) -> bool:
        """Whether to try Redis now: yes, except during an outage's back-off."""
        return self._down_until is None or self._clock() >= self._down_until

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> list[Any] | None:
        """The script's reply, or None (after noting the outage) when Redis failed."""
        try:
            async with asyncio.timeout(2 * TIMEOUT_S):
                reply: list[Any] = await script(keys=keys, args=args)
        except self._errors as e:
            self._failed(e)
            return None
        if self._down_until is not None:
            self._down_until = None
            metrics.limits_backend("redis")
            logger.info("limits.redis: %s answers again; limits are shared again", self._where)
        return reply

    def _failed(self, error: BaseException) -> None:
        first = self._down_until is None
        self._down_until = self._clock() + self._retry_after_s
        if not first:
            return
        metrics.limits_backend("local-fallback")
        reason = f"{type(error).__name__}: {error}".rstrip(": ")
        if self._password:
            reason = reason.replace(self._password, "***")
        logger.warning(
            "limits.redis: %s is unreachable (%s); counting limits in each process until it "
            "answers again (next try in %g s)",
            self._where,
            reason,
            self._retry_after_s,
        )


def _connect(url: str) -> Any:
    """A ``redis.asyncio`` client that gives up fast: a slow Redis must not slow action calls."""
    aioredis = require_extra("redis.asyncio", "redis", "limits.redis")
    retry = require_extra("redis.asyncio.retry", "redis", "limits.redis")
    backoff = require_extra("redis.backoff", "redis", "limits.redis")
    return aioredis.Redis.from_url(
        url,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        retry=retry.Retry(backoff.NoBackoff(), 0),  # the fallback is the retry
    )


def _redis_errors() -> tuple[type[Exception], ...]:
    exceptions = require_extra("redis.exceptions", "redis", "limits.redis")
    return (exceptions.RedisError,)
