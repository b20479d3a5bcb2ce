"""Each client front of actiongate next to a direct call: added latency and time to first token.

The same servers as ``bench_proxy.py`` (the zero-latency scripted upstream, the sample action API,
``actiongate serve`` with one worker and the log on), started by its code. In one interleaved
loop, each round visits every route: the mock directly (Chat Completions), then actiongate's
``/v1/chat/completions`` and ``/v1/messages`` (Anthropic Messages; the upstream stays Chat
Completions, so this measures the front's translation both ways). Non-streamed requests, then
streamed ones (time to the first chunk carrying text). Added = p50(front) - p50(direct).

    python bench/bench_fronts.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
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
    start_all,
    start_servers,
    stop,
)
from harness import markdown_table, percentile

Parse = Callable[[bytes], str | None]


def _chat_text(payload: bytes) -> str | None:
    return orjson.loads(payload)["choices"][0]["message"].get("content")


def _messages_text(payload: bytes) -> str | None:
    return "".join(b.get("text", "") for b in orjson.loads(payload)["content"]) or None


def _chat_delta(line: bytes) -> str | None:
    if not line.startswith(b"data: {"):
        return None
    choices = orjson.loads(line[6:]).get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content")


def _messages_delta(line: bytes) -> str | None:
    if not line.startswith(b"data: {"):
        return None
    event = orjson.loads(line[6:])
    return (
        (event.get("delta") or {}).get("text") if event["type"] == "content_block_delta" else None
    )


FRONTS: dict[str, tuple[str, Parse, Callable[[bytes], str | None], dict[str, object]]] = {
    "chat": ("/v1/chat/completions", _chat_text, _chat_delta, {}),
    "messages": ("/v1/messages", _messages_text, _messages_delta, {"max_tokens": 256}),
}


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


async def run(requests: int, work: Path) -> dict[str, dict[str, list[float]]]:
    args = argparse.Namespace(skip_litellm=True, bench_venv=str(work / "venv"))
    setup = start_servers(args, work, (None, None))
    routes = {
        "direct": (f"{setup.base('mock')}/v1/chat/completions", "scripted", "chat"),
        **{
            f"actiongate {name}": (f"{setup.base('actiongate')}{path}", AGENT, name)
            for name, (path, *_rest) in FRONTS.items()
        },
    }
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
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
                for i in range(count):
                    k = i % len(names)
                    for name in names[k:] + names[:k]:
                        url, model, front = routes[name]
                        _path, parse, delta, extra = FRONTS[front]
                        stream = metric == "ttft"
                        body = orjson.dumps(
                            {"model": model, "messages": MESSAGES, "stream": stream, **extra}
                        )
                        elapsed = (
                            await _ttft(session, url, body, delta)
                            if stream
                            else await _timed(session, url, body, parse)
                        )
                        if count == requests:
                            samples[name][metric].append(elapsed)
    finally:
        for service in setup.services:
            stop(service.process)
    return samples


def report(samples: dict[str, dict[str, list[float]]], requests: int) -> str:
    def p50(name: str, metric: str) -> float:
        return percentile(sorted(samples[name][metric]), 50) * 1000

    rows = []
    for name in samples:
        if name == "direct":
            continue
        rows.append(
            [
                name.removeprefix("actiongate "),
                round(p50(name, "plain"), 2),
                f"+{p50(name, 'plain') - p50('direct', 'plain'):.2f}",
                round(p50(name, "ttft"), 2),
                f"+{p50(name, 'ttft') - p50('direct', 'ttft'):.2f}",
            ]
        )
    head = ["front", "p50 (ms)", "added p50 (ms)", "TTFT p50 (ms)", "added TTFT (ms)"]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    direct = f"direct p50 {p50('direct', 'plain'):.2f} ms, TTFT {p50('direct', 'ttft'):.2f} ms"
    return f"## actiongate fronts ({stamp}, {requests} requests each, {direct})\n\n" + (
        markdown_table(head, rows)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args, _unknown = parser.parse_known_args(argv)  # bench-wide flags of dev.py bench pass by
    with tempfile.TemporaryDirectory() as tmp:
        samples = asyncio.run(run(args.requests, Path(tmp)))
    print(report(samples, args.requests))


if __name__ == "__main__":
    sys.exit(main())
