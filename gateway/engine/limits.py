"""Protection for the APIs behind actions, and for the gateway (per process).

- **Circuit breaker per action**: after ``failures`` consecutive failures (timeouts, connection
  errors, 5xx) the action fails fast for ``cooldown_s``; then one trial call is let through,
  and its result closes or re-opens the circuit.
- **Concurrency cap per action**: at most ``concurrency`` calls to one action at once.
- **Rate limit per conversation**: at most ``rate`` action calls per ``per_s`` seconds in one
  conversation (a sliding window).

Each refusal is a reason the model reads; the executor logs it as ``rejected``. :class:`Limits`
keeps its state in this process only: with several replicas each keeps its own breaker and
counters. With ``limits.redis`` the executor gets a
:class:`~gateway.engine.redis_limits.RedisLimits` instead, which shares them (and falls back
to a :class:`Limits` while Redis is unreachable); both are :class:`ActionLimits`, with the same
refusal texts.

``acquire`` and ``release`` are coroutines for the shared kind's sake; the per-process ones never
await, so each check-and-count stays atomic on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

from gateway.definitions.config import LimitsConfig
from gateway.telemetry import metrics

__all__ = [
    "ActionLimits",
    "Backend",
    "Limits",
    "LimitsConfig",
    "Permit",
    "SlidingWindow",
    "busy_reason",
    "open_reason",
    "rate_reason",
]

_MAX_CONVERSATIONS = 100_000
K = TypeVar("K", bound=Hashable)

Backend = Literal["local", "redis", "local-fallback"]
"""Where limits are counted: this process, Redis, or this process while Redis is unreachable."""


def open_reason(wait_s: float) -> str:
    """The refusal while an action's circuit is open (``wait_s``: until the trial call)."""
    return (
        "the API behind this action is failing right now, so the gateway is not "
        f"calling it for about {max(1, round(wait_s))} s; tell the customer and do not "
        "retry at once"
    )


def busy_reason() -> str:
    """The refusal when an action's concurrency cap is reached."""
    return "too many calls to this action are running at once; try again shortly"


def rate_reason(config: LimitsConfig) -> str:
    """The refusal when a conversation used up its rate."""
    return (
        f"this conversation made {config.rate} action calls in {config.per_s:g} s, the "
        "most allowed; wait before calling actions again"
    )


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False


@dataclass(slots=True)
class _Action:
    running: int = 0
    breaker: _Breaker = field(default_factory=_Breaker)


@dataclass(slots=True)
class Permit:
    """Permission for one call; :meth:`Limits.release` must be called with its result."""

    tool: str
    trial: bool = False
    lease: str | None = None
    """The permit's id in Redis; None for a permit counted in this process."""


class ActionLimits(Protocol):
    """What the executor asks before and tells after each call."""

    async def acquire(self, tool: str, conversation_id: str | None) -> Permit | str:
        """A :class:`Permit`, or the reason (for the model) why the call may not run now."""
        ...

    async def release(self, permit: Permit, *, failed: bool) -> None:
        """Record a call's result: failures count towards opening the circuit."""
        ...

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Per-action state for health checks (cheap: no network call)."""
        ...

    @property
    def backend(self) -> Backend:
        """Where the limits are counted right now."""
        ...

    async def close(self) -> None:
        """Let go of connections."""
        ...


class Limits:
    """Circuit breakers, concurrency caps and conversation rate limits."""

    def __init__(
        self, config: LimitsConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or LimitsConfig()
        self._clock = clock
        self._actions: dict[str, _Action] = {}
        self._calls: SlidingWindow[str] = SlidingWindow(clock=clock)

    @property
    def backend(self) -> Backend:
        """Always this process."""
        return "local"

    async def close(self) -> None:
        """Nothing to close."""

    async def acquire(self, tool: str, conversation_id: str | None) -> Permit | str:
        """A :class:`Permit`, or the reason (for the model) why the call may not run now."""
        cfg = self.config
        now = self._clock()
        state = self._actions.setdefault(tool, _Action())
        breaker = state.breaker
        trial = False
        if breaker.opened_at is not None:
            wait = breaker.opened_at + cfg.cooldown_s - now
            if wait > 0 or breaker.trial_running:
                return open_reason(wait)
            trial = True
        if state.running >= cfg.concurrency:
            return busy_reason()
        if (
            conversation_id is not None
            and self._calls.admit(conversation_id, cfg.rate, cfg.per_s, now) is not None
        ):
            return rate_reason(cfg)
        state.running += 1
        if trial:
            breaker.trial_running = True
        return Permit(tool, trial)

    async def release(self, permit: Permit, *, failed: bool) -> None:
        """Record a call's result: failures count towards opening the circuit."""
        state = self._actions[permit.tool]
        state.running -= 1
        breaker = state.breaker
        if permit.trial:
            breaker.trial_running = False
        if not failed:
            breaker.failures = 0
            if breaker.opened_at is not None:
                metrics.circuit(permit.tool, False)
            breaker.opened_at = None
            return
        breaker.failures += 1
        if permit.trial or breaker.failures >= self.config.failures:
            if breaker.opened_at is None:
                metrics.circuit(permit.tool, True)
            breaker.opened_at = self._clock()

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Per-action state for health checks."""
        return {
            tool: {
                "running": s.running,
                "consecutive_failures": s.breaker.failures,
                "circuit": "open" if s.breaker.opened_at is not None else "closed",
            }
            for tool, s in self._actions.items()
        }


class SlidingWindow(Generic[K]):
    """At most ``requests`` events per key in any ``per_s`` seconds (per process).

    Used for action calls per conversation (:class:`Limits`) and for browser requests to an
    agent with a ``widget_rate``, keyed by client address. Memory follows the keys active in
    the last window, not every key ever seen: keys are kept in order of last use (a plain
    dict, re-inserted on use), and those whose every event has expired are dropped from the
    front as new events come (a busy gateway sees a new conversation id on almost every
    request). A key's first event is a bare float, a list only from its second: most
    conversations call one action, and at a thousand new ones a second a minute's window
    holds 60,000 keys (~60 bytes each besides the key, ~200 with a list). At most
    :data:`_MAX_CONVERSATIONS` keys are kept in any case.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._events: dict[K, float | list[float]] = {}
        self._longest = 0.0

    def __len__(self) -> int:
        return len(self._events)

    def admit(self, key: K, requests: int, per_s: float, now: float | None = None) -> float | None:
        """Record one event for ``key``; None if admitted, else the seconds until one would be.

        ``requests`` is at least 1 (the configuration's bounds): a key's first event is admitted
        without a look at it.
        """
        now = self._clock() if now is None else now
        self._longest = max(self._longest, per_s)
        events = self._events
        seen = events.pop(key, None)  # put back below: the most recently used key goes last
        if seen is None:
            self._forget_expired(now)
            events[key] = now
            if len(events) > _MAX_CONVERSATIONS:
                del events[next(iter(events))]
            return None
        window = seen if isinstance(seen, list) else [seen]
        expired = 0
        while expired < len(window) and window[expired] <= now - per_s:
            expired += 1
        if expired:
            del window[:expired]
        if len(window) >= requests:
            events[key] = window
            return window[0] + per_s - now
        window.append(now)
        events[key] = window
        return None

    def _forget_expired(self, now: float) -> None:
        # The front key is the least recently used; its newest event is its last. Keys are
        # checked against the longest window any caller used, so none is forgotten early.
        events, horizon = self._events, now - self._longest
        for _ in range(4):  # amortised: a few per new key keep up with one new key per event
            if not events:
                return
            key, seen = next(iter(events.items()))
            last = seen[-1] if isinstance(seen, list) else seen
            if last > horizon:
                return
            del events[key]
