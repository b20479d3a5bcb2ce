"""What the observability code adds to one request, measured on its own.

End to end (``bench_proxy.py``) the shared machine moves the same tree's added p50 by 0.2-0.4 ms
between runs, far more than the 0.05 ms budget, so this measures the added code directly, in one
process, many times (median of ``--repeat`` runs of ``--n`` calls each):

- the telemetry middleware around a bare ASGI app on a front's path, against the bare app, with
  tracing off, with ``OTEL_TRACES_EXPORTER=none`` (a client ``traceparent`` sent or not), and with
  recording spans (the SDK, no exporter) for reference;
- the metric calls of one plain request (request, upstream call, tokens) and of one tool round
  trip (two upstream calls, two token counts, one action call);
- one ``chat {model}`` span started and ended, off and recorded.

    python bench/bench_telemetry.py [--n 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace import TracerProvider

from gateway.telemetry import metrics, tracing
from gateway.telemetry.middleware import TelemetryMiddleware

PATH = "/v1/chat/completions"


async def _bare(scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _scope(traceparent: bool) -> dict:  # type: ignore[type-arg]
    headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer k")]
    if traceparent:
        headers.append((b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
    return {"type": "http", "method": "POST", "path": PATH, "headers": headers}


async def _per_call_us(app: Callable[..., Awaitable[None]], traceparent: bool, n: int) -> float:
    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict) -> None:  # type: ignore[type-arg]
        return None

    started = time.perf_counter()
    for _ in range(n):
        await app(_scope(traceparent), receive, send)
    return (time.perf_counter() - started) / n * 1e6


def _median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def _timed(fn: Callable[[], None], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def _plain_request() -> None:
    metrics.request("chat", "bench", 200, 0.001, 0.0005)
    metrics.upstream("bench", "scripted", 200, 0.0005)
    metrics.tokens("bench", "scripted", 12, 6)


def _tool_round_trip() -> None:
    metrics.request("chat", "bench", 200, 0.002, 0.0015)
    for _ in range(2):
        metrics.upstream("bench", "scripted", 200, 0.0005)
        metrics.tokens("bench", "scripted", 12, 6)
    metrics.action_call("look_up_order", "bench", "success", 0.0005)


def _span() -> None:
    tracing.end_upstream(tracing.start_upstream("scripted", "openai"), 200, (12, 6))


def run(n: int, repeat: int) -> list[tuple[str, float]]:
    metrics.set_known(["bench"], ["look_up_order"])
    wrapped = TelemetryMiddleware(_bare, {PATH: "chat"})

    def middleware(traceparent: bool) -> float:
        return asyncio.run(_per_call_us(wrapped, traceparent, n))

    bare = _median(lambda: asyncio.run(_per_call_us(_bare, False, n)), repeat)
    rows = [("bare ASGI app, per request", bare)]
    tracing.install(None)
    rows.append(("+ middleware, tracing off", _median(lambda: middleware(False), repeat) - bare))
    rows.append(
        ("plain request's metric calls", _median(lambda: _timed(_plain_request, n), repeat))
    )
    rows.append(
        ("tool round trip's metric calls", _median(lambda: _timed(_tool_round_trip, n), repeat))
    )
    rows.append(("chat span, tracing off", _median(lambda: _timed(_span, n), repeat)))
    tracing.configure({"OTEL_TRACES_EXPORTER": "none"})
    rows.append(("+ middleware, exporter none", _median(lambda: middleware(False), repeat) - bare))
    rows.append(
        (
            "+ middleware, exporter none, client traceparent",
            _median(lambda: middleware(True), repeat) - bare,
        )
    )
    rows.append(("chat span, exporter none", _median(lambda: _timed(_span, n), repeat)))
    tracing.install(TracerProvider())
    rows.append(
        (
            "+ middleware, spans recorded (reference)",
            _median(lambda: middleware(False), repeat) - bare,
        )
    )
    rows.append(("chat span recorded (reference)", _median(lambda: _timed(_span, n), repeat)))
    tracing.install(None)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args, _unknown = parser.parse_known_args(argv)
    rows = run(args.n, args.repeat)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"## telemetry cost ({stamp}, median of {args.repeat} x {args.n} calls)\n")
    print("| what | µs |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.1f} |")


if __name__ == "__main__":
    main()
