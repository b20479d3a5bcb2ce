"""Each client front and each upstream dialect of actiongate next to a direct call: added
latency and time to first token.

The same servers as ``bench_proxy.py`` (the zero-latency scripted upstream, the sample action API,
``actiongate serve`` with one worker and the log on), started by its code. In one interleaved
loop, each round visits every route: the mock directly in each of its three dialects, then
actiongate's three fronts (``/v1/chat/completions``, ``/v1/responses`` with and without
``store``, ``/v1/messages``) over a Chat Completions upstream, and its Chat Completions front
over a Responses and an Anthropic upstream (agents ``bench-responses``, ``bench-anthropic``).
Non-streamed requests, then streamed ones (time to the first event carrying text). Added =
p50(route) - p50(the direct call of the dialect the gateway sends upstream); "vs chat" is a
route's added time minus the Chat Completions path's.

Each round visits the routes in a new random order (seeded), so work a route leaves behind its
answer (a stored response's insert) lands on every other route alike rather than always on the
same neighbour. That work is counted where it belongs by the second pass: per route, a block of
requests alone, with the gateway process's CPU time (``/proc``) per request — its own cost,
whatever runs after the answer included.

    python bench/bench_fronts.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
from bench_proxy import (
    AGENT,
    FIXED_TEXT,
    JSON_HEADERS,
    MESSAGES,
    BenchError,
    cpu_seconds,
    start_all,
    start_servers,
    stop,
)
from harness import markdown_table, percentile

Parse = Callable[[bytes], str | None]
SEED = 14
CPU_BLOCK = 300
"""Requests per route in the CPU pass."""


def _chat_text(payload: bytes) -> str | None:
    return orjson.loads(payload)["choices"][0]["message"].get("content")


def _messages_text(payload: bytes) -> str | None:
    return "".join(b.get("text", "") for b in orjson.loads(payload)["content"]) or None


def _chat_delta(line: bytes) -> str | None:
    if not line.startswith(b"data: {"):
        return None
    choices = orjson.loads(line[6:]).get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content")


def _responses_text(payload: bytes) -> str | None:
    items = orjson.loads(payload)["output"]
    return "".join(p["text"] for i in items if i["type"] == "message" for p in i["content"]) or None


def _responses_delta(line: bytes) -> str | None:
    if not line.startswith(b"data: {"):
        return None
    event = orjson.loads(line[6:])
    return event.get("delta") if event["type"] == "response.output_text.delta" else None


def _messages_delta(line: bytes) -> str | None:
    if not line.startswith(b"data: {"):
        return None
    event = orjson.loads(line[6:])
    return (
        (event.get("delta") or {}).get("text") if event["type"] == "content_block_delta" else None
    )


FRONTS: dict[str, tuple[str, Parse, Callable[[bytes], str | None], dict[str, object]]] = {
    "chat": ("/v1/chat/completions", _chat_text, _chat_delta, {}),
    "responses": ("/v1/responses", _responses_text, _responses_delta, {}),
    "responses, store: false": (
        "/v1/responses",
        _responses_text,
        _responses_delta,
        {"store": False},
    ),
    "messages": ("/v1/messages", _messages_text, _messages_delta, {"max_tokens": 256}),
}
"""Wire format: path, whole-answer text, stream-line text, extra body fields."""


def _body(front: str, model: str, stream: bool) -> bytes:
    extra = FRONTS[front][3]
    if front.startswith("responses"):
        text = MESSAGES[0]["content"]
        return orjson.dumps({"model": model, "input": text, "stream": stream, **extra})
    return orjson.dumps({"model": model, "messages": MESSAGES, "stream": stream, **extra})


async def _timed(session: aiohttp.ClientSession, url: str, body: bytes, parse: Parse) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=JSON_HEADERS) as resp:
        payload = await resp.read()
    elapsed = time.perf_counter() - started
    if resp.status != 200 or parse(payload) != FIXED_TEXT:
        raise BenchError(f"{url}: HTTP {resp.status}: {payload[:300]!r}")
    return elapsed


async def _ttft(
    session: aiohttp.ClientSession, url: str, body: bytes, delta: Callable[[bytes], str | None]
) -> float:
    started, first = time.perf_counter(), None
    async with session.post(url, data=body, headers=JSON_HEADERS) as resp:
        async for line in resp.content:
            if first is None and delta(line):
                first = time.perf_counter() - started
    if first is None:
        raise BenchError(f"{url}: the stream carried no text")
    return first


async def _cpu_per_request(
    session: aiohttp.ClientSession, pid: int, url: str, model: str, front: str
) -> float:
    """The gateway's CPU seconds per request of one route, sent alone in a block."""
    parse = FRONTS[front][1]
    body = _body(front, model, False)
    before = cpu_seconds(pid)
    for _ in range(CPU_BLOCK):
        await _timed(session, url, body, parse)
    await asyncio.sleep(0.2)  # what runs after the last answer
    return (cpu_seconds(pid) - before) / CPU_BLOCK


Route = tuple[str, str, str, str]
"""url, model, wire format, the direct route it is measured against."""


def _routes(mock: str, gate: str) -> dict[str, Route]:
    routes: dict[str, Route] = {
        f"direct {front}": (f"{mock}{path}", "scripted", front, f"direct {front}")
        for front, (path, *_rest) in FRONTS.items()
        if "store" not in front
    }
    for front, (path, *_rest) in FRONTS.items():
        routes[f"front {front}"] = (f"{gate}{path}", AGENT, front, "direct chat")
    chat_path = FRONTS["chat"][0]
    routes["upstream responses"] = (
        f"{gate}{chat_path}",
        f"{AGENT}-responses",
        "chat",
        "direct responses",
    )
    routes["upstream anthropic"] = (
        f"{gate}{chat_path}",
        f"{AGENT}-anthropic",
        "chat",
        "direct messages",
    )
    return routes


async def run(
    requests: int, work: Path
) -> tuple[dict[str, Route], dict[str, dict[str, list[float]]]]:
    args = argparse.Namespace(skip_litellm=True, bench_venv=str(work / "venv"))
    setup = start_servers(args, work, (None, None))
    routes = _routes(setup.base("mock"), setup.base("actiongate"))
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    order = random.Random(SEED)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(30)) as session:
            await start_all(session, setup)
            for metric, count in (
                ("plain", 50),
                ("plain", requests),
                ("ttft", 50),
                ("ttft", requests),
            ):
                names = list(routes)
                for _ in range(count):
                    order.shuffle(names)
                    for name in names:
                        url, model, front, _base = routes[name]
                        _path, parse, delta, _extra = FRONTS[front]
                        stream = metric == "ttft"
                        body = _body(front, model, stream)
                        elapsed = (
                            await _ttft(session, url, body, delta)
                            if stream
                            else await _timed(session, url, body, parse)
                        )
                        if count == requests:
                            samples[name][metric].append(elapsed)
            gate = next(s.process.pid for s in setup.services if s.name == "actiongate")
            for name, (url, model, front, _base) in routes.items():
                samples[name]["cpu"] = [await _cpu_per_request(session, gate, url, model, front)]
    finally:
        for service in setup.services:
            stop(service.process)
    return routes, samples


def report(
    routes: dict[str, Route], samples: dict[str, dict[str, list[float]]], requests: int
) -> str:
    def p50(name: str, metric: str) -> float:
        return percentile(sorted(samples[name][metric]), 50) * 1000

    def added(name: str, metric: str) -> float:
        return p50(name, metric) - p50(routes[name][3], metric)

    rows = []
    for name in routes:
        if name.startswith("direct"):
            continue
        rows.append(
            [
                name,
                round(p50(name, "plain"), 2),
                f"+{added(name, 'plain'):.2f}",
                f"{added(name, 'plain') - added('front chat', 'plain'):+.2f}",
                round(p50(name, "ttft"), 2),
                f"+{added(name, 'ttft'):.2f}",
                f"{added(name, 'ttft') - added('front chat', 'ttft'):+.2f}",
                round(samples[name]["cpu"][0] * 1e6),
            ]
        )
    head = ["route", "p50 (ms)", "added p50", "vs chat", "TTFT p50 (ms)", "added TTFT", "vs chat"]
    head.append("gateway CPU/request (µs)")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    direct = ", ".join(
        f"{n.removeprefix('direct ')} {p50(n, 'plain'):.2f}/{p50(n, 'ttft'):.2f}"
        for n in routes
        if n.startswith("direct")
    )
    return (
        f"## actiongate fronts and upstream dialects ({stamp}, {requests} requests each; "
        f"direct p50/TTFT ms: {direct})\n\n" + markdown_table(head, rows)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args, _unknown = parser.parse_known_args(argv)  # bench-wide flags of dev.py bench pass by
    with tempfile.TemporaryDirectory() as tmp:
        routes, samples = asyncio.run(run(args.requests, Path(tmp)))
    print(report(routes, samples, args.requests))


if __name__ == "__main__":
    sys.exit(main())
