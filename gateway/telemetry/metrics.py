"""Prometheus metrics (prometheus-client), recorded where things happen, scraped at ``/metrics``.

Series (README, "Observability"):

- ``actiongate_requests_total{front,agent,status}``, ``actiongate_request_duration_seconds{front}``
  and ``actiongate_gateway_added_seconds{front}`` (a request's time minus what it waited for the
  upstream and the actions): client requests.
- ``actiongate_upstream_requests_total{agent,model,status}``,
  ``actiongate_upstream_duration_seconds{agent,model}``: calls to the LLM API.
- ``actiongate_action_calls_total{action,agent,outcome}`` (the log's outcomes),
  ``actiongate_action_duration_seconds{action}``.
- ``actiongate_tokens_total{agent,model,kind}`` (``prompt``, ``completion``).
- ``actiongate_log_buffer_records``, ``actiongate_log_records_dropped_total``,
  ``actiongate_circuit_open{action}``, ``actiongate_action_health{action}``.
- With ``limits.redis`` only: ``actiongate_limits_backend{backend}`` (1 on ``redis`` while Redis
  answers, on ``local-fallback`` during an outage; the other is 0) and
  ``actiongate_limits_fallback_total{op}`` (``acquire``, ``release``: limit checks and results
  kept in the process because Redis was unreachable).

Labels are bounded: an agent or action label is a configured id or ``(other)``, never a name a
client or a model made up (:func:`set_known`); ``status`` is the HTTP status code.

Several processes on one port: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by
them before they start (prometheus-client's multiprocess mode); every process writes its series
there and a scrape of any of them sums counters and histograms over all, takes ``livesum`` of
the log buffer, ``livemax`` of open circuits, ``livemax`` of the limits backend (a
worker in fallback shows) and ``mostrecent`` of health.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Literal

if _directory := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # prometheus-client writes its files there from its first metric on: make sure it exists.
    os.makedirs(_directory, exist_ok=True)

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

__all__ = [
    "CONTENT_TYPE",
    "OTHER",
    "action_call",
    "circuit",
    "health",
    "limits_backend",
    "limits_fallback",
    "log_buffer",
    "log_dropped",
    "multiprocess",
    "registry",
    "render",
    "request",
    "set_known",
    "tokens",
    "upstream",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "(other)"
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ADDED = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

_REQUESTS = Counter(
    "actiongate_requests",
    "Client requests by front, agent and status",
    ["front", "agent", "status"],
)
_REQUEST_SECONDS = Histogram(
    "actiongate_request_duration_seconds",
    "Client request duration (a stream: to its last event)",
    ["front"],
    buckets=_LATENCY,
)
_ADDED_SECONDS = Histogram(
    "actiongate_gateway_added_seconds",
    "Time the gateway itself added to a request: its duration minus upstream and action waits",
    ["front"],
    buckets=_ADDED,
)
_UPSTREAM = Counter(
    "actiongate_upstream_requests", "Calls to the LLM API", ["agent", "model", "status"]
)
_UPSTREAM_SECONDS = Histogram(
    "actiongate_upstream_duration_seconds",
    "LLM API call duration (a stream: to its last event)",
    ["agent", "model"],
    buckets=_LATENCY,
)
_ACTIONS = Counter(
    "actiongate_action_calls", "Action calls by outcome", ["action", "agent", "outcome"]
)
_ACTION_SECONDS = Histogram(
    "actiongate_action_duration_seconds", "Action call duration", ["action"], buckets=_LATENCY
)
_TOKENS = Counter("actiongate_tokens", "Tokens the LLM API reported", ["agent", "model", "kind"])
_LOG_BUFFER = Gauge(
    "actiongate_log_buffer_records",
    "Execution records waiting to be written",
    multiprocess_mode="livesum",
)
_LOG_DROPPED = Counter(
    "actiongate_log_records_dropped", "Execution records dropped because the buffer was full"
)
_CIRCUIT = Gauge(
    "actiongate_circuit_open",
    "1 while the action's circuit breaker is open",
    ["action"],
    multiprocess_mode="livemax",
)
_HEALTH = Gauge(
    "actiongate_action_health",
    "The latest scheduled health check: 1 passed, 0 failed",
    ["action"],
    multiprocess_mode="mostrecent",
)
_LIMITS_BACKEND = Gauge(
    "actiongate_limits_backend",
    "1 on where limits.redis limits are counted now: redis, or local-fallback while it is down",
    ["backend"],
    multiprocess_mode="livemax",
)
_FALLBACK = Counter(
    "actiongate_limits_fallback",
    "Limit checks (acquire) and call results (release) kept in the process: Redis unreachable",
    ["op"],
)

_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: a third of the cost on every later call.

    Bounded like the labels themselves (configured ids, statuses, outcomes).
    """
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


_known_agents: frozenset[str] = frozenset()
_known_actions: frozenset[str] = frozenset()


def set_known(agents: Iterable[str], actions: Iterable[str]) -> None:
    """The configured agent and action ids: the only values those labels take."""
    global _known_agents, _known_actions
    _known_agents, _known_actions = frozenset(agents), frozenset(actions)


def _agent(agent: str | None) -> str:
    return agent if agent in _known_agents else OTHER


def _action(action: str) -> str:
    return action if action in _known_actions else OTHER


def request(front: str, agent: str | None, status: int, seconds: float, waited: float) -> None:
    """One client request ended (``waited``: its time in upstream and action calls)."""
    _child(_REQUESTS, front, _agent(agent), str(status)).inc()
    _child(_REQUEST_SECONDS, front).observe(seconds)
    _child(_ADDED_SECONDS, front).observe(max(0.0, seconds - waited))


def upstream(agent: str | None, model: str, status: int, seconds: float) -> None:
    """One call to the LLM API ended."""
    label = _agent(agent)
    _child(_UPSTREAM, label, model, str(status)).inc()
    _child(_UPSTREAM_SECONDS, label, model).observe(seconds)


def tokens(agent: str | None, model: str, prompt: int, completion: int) -> None:
    """Token usage of one upstream call."""
    label = _agent(agent)
    if prompt:
        _child(_TOKENS, label, model, "prompt").inc(prompt)
    if completion:
        _child(_TOKENS, label, model, "completion").inc(completion)


def action_call(action: str, agent: str | None, outcome: str, seconds: float) -> None:
    """One action call ended with this log outcome."""
    label = _action(action)
    _child(_ACTIONS, label, _agent(agent), outcome).inc()
    _child(_ACTION_SECONDS, label).observe(seconds)


def log_buffer(records: int) -> None:
    """How many execution records wait to be written."""
    _LOG_BUFFER.set(records)


def log_dropped(count: int = 1) -> None:
    """Execution records dropped."""
    _LOG_DROPPED.inc(count)


def circuit(action: str, is_open: bool) -> None:
    """An action's circuit breaker opened or closed."""
    _child(_CIRCUIT, _action(action)).set(1 if is_open else 0)


def health(action: str, ok: bool) -> None:
    """The result of an action's latest scheduled health check."""
    _child(_HEALTH, _action(action)).set(1 if ok else 0)


def limits_backend(backend: Literal["redis", "local-fallback"]) -> None:
    """Where the shared limits are counted now (Redis answered the latest call, or not)."""
    _child(_LIMITS_BACKEND, "redis").set(1 if backend == "redis" else 0)
    _child(_LIMITS_BACKEND, "local-fallback").set(0 if backend == "redis" else 1)


def limits_fallback(op: Literal["acquire", "release"]) -> None:
    """One limit check or call result kept in the process because Redis was unreachable."""
    _child(_FALLBACK, op).inc()


def multiprocess() -> bool:
    """Whether several processes share their metrics (``PROMETHEUS_MULTIPROC_DIR``)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def registry() -> CollectorRegistry:
    """What a scrape reads: this process's series, or every process's in multiprocess mode."""
    if not multiprocess():
        return REGISTRY
    combined = CollectorRegistry()
    _multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


def render() -> bytes:
    """The Prometheus text exposition of :func:`registry`."""
    return generate_latest(registry())
