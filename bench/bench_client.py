"""Choose the outbound HTTP client: httpx, httpx over aiohttp, aiohttp, or the gateway's own.

Each client sends ``GET /item`` (a ~300-byte JSON document) to the same local aiohttp.web
server, running in a separate process (see :mod:`harness` for placement), from 1 and from 32
concurrent workers, reading every whole response. Printed: requests/s and p50/p99 latency per
client per concurrency, plus both processes' CPU use, as a Markdown table.

Clients (``--clients``, comma-separated):

- ``httpx``: ``httpx.AsyncClient`` with its default transport (httpcore);
- ``httpx-aiohttp``: ``httpx.AsyncClient`` over the ``httpx-aiohttp`` package's transport when
  that package is installed (``pip install httpx-aiohttp``; it is not a project dependency),
  otherwise over the minimal in-script transport below;
- ``httpx-inline``: ``httpx.AsyncClient`` over the minimal in-script aiohttp transport;
- ``aiohttp``: ``aiohttp.ClientSession`` directly;
- ``http1``: the gateway's own keep-alive client (:mod:`gateway.net.http1`, httptools' parser),
  which the upstream and action calls use.

Every client gets the same pool size (``--pool``, kept connections included) and ignores proxy
settings from the environment, so the comparison is of the client code, not of its defaults.

    .venv/bin/python bench/bench_client.py                 # ~40 s
    .venv/bin/python bench/bench_client.py --duration 10 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import metadata

import aiohttp
import httpx
from harness import (
    ITEM_BODY,
    Phase,
    TargetServer,
    cpu_placement,
    describe_placement,
    markdown_table,
    pin_to_cpu,
    quietest,
    run_phase,
)

Fetch = Callable[[], Awaitable[None]]
ClientFactory = Callable[[str, int], AbstractAsyncContextManager[Fetch]]

DEFAULT_CLIENTS = ("httpx", "httpx-aiohttp", "aiohttp", "http1")


def _check(status: int, body: bytes) -> None:
    if status != 200 or len(body) != len(ITEM_BODY):
        raise RuntimeError(f"unexpected response: {status}, {len(body)} bytes")


class InlineAiohttpTransport(httpx.AsyncBaseTransport):
    """A minimal httpx transport over one ``aiohttp.ClientSession`` (body read eagerly)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            async with self._session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
        except aiohttp.ClientConnectorError as e:
            raise httpx.ConnectError(str(e), request=request) from e
        except aiohttp.ClientError as e:
            raise httpx.ReadError(str(e), request=request) from e
        return httpx.Response(resp.status, headers=resp.raw_headers, content=body, request=request)

    async def aclose(self) -> None:
        await self._session.close()


def _limits(pool: int) -> httpx.Limits:
    return httpx.Limits(max_connections=pool, max_keepalive_connections=pool)


def _httpx_fetch(client: httpx.AsyncClient, url: str) -> Fetch:
    async def fetch() -> None:
        response = await client.get(url)
        _check(response.status_code, response.content)

    return fetch


@asynccontextmanager
async def httpx_default(url: str, pool: int) -> AsyncIterator[Fetch]:
    """``httpx.AsyncClient`` with its default (httpcore) transport."""
    async with httpx.AsyncClient(limits=_limits(pool), trust_env=False) as client:
        yield _httpx_fetch(client, url)


@asynccontextmanager
async def httpx_inline(url: str, pool: int) -> AsyncIterator[Fetch]:
    """``httpx.AsyncClient`` over :class:`InlineAiohttpTransport`."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool), trust_env=False, auto_decompress=False
    )
    transport = InlineAiohttpTransport(session)
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        yield _httpx_fetch(client, url)


@asynccontextmanager
async def httpx_aiohttp(url: str, pool: int) -> AsyncIterator[Fetch]:
    """``httpx.AsyncClient`` over the ``httpx-aiohttp`` package's transport."""
    from httpx_aiohttp import AiohttpTransport

    transport = AiohttpTransport(limits=_limits(pool), trust_env=False)
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        yield _httpx_fetch(client, url)


@asynccontextmanager
async def aiohttp_direct(url: str, pool: int) -> AsyncIterator[Fetch]:
    """``aiohttp.ClientSession`` used directly."""
    connector = aiohttp.TCPConnector(limit=pool)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

        async def fetch() -> None:
            async with session.get(url) as response:
                _check(response.status, await response.read())

        yield fetch


@asynccontextmanager
async def gateway_http1(url: str, pool: int) -> AsyncIterator[Fetch]:
    """:class:`gateway.net.http1.Http1Pool`, as the upstream and action calls use it."""
    from gateway.net.http1 import Http1Pool

    client = Http1Pool(max_connections=pool)

    async def fetch() -> None:
        response = await client.request("GET", url, {}, None)
        try:
            _check(response.status, await response.read(1 << 20))
        finally:
            response.release()

    try:
        yield fetch
    finally:
        await client.close()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def resolve_clients(names: list[str]) -> list[tuple[str, ClientFactory]]:
    """Labels and factories for the requested client names."""
    resolved: list[tuple[str, ClientFactory]] = []
    for name in names:
        if name == "httpx":
            resolved.append(("httpx.AsyncClient (default transport)", httpx_default))
        elif name == "httpx-aiohttp" and _version("httpx-aiohttp"):
            label = f"httpx.AsyncClient + httpx-aiohttp {_version('httpx-aiohttp')} transport"
            resolved.append((label, httpx_aiohttp))
        elif name in {"httpx-aiohttp", "httpx-inline"}:
            resolved.append(("httpx.AsyncClient + in-script aiohttp transport", httpx_inline))
        elif name == "aiohttp":
            resolved.append(("aiohttp.ClientSession", aiohttp_direct))
        elif name == "http1":
            resolved.append(("gateway.net.http1.Http1Pool", gateway_http1))
        else:
            raise SystemExit(
                f"unknown client {name!r}; choose from httpx, httpx-aiohttp, httpx-inline, "
                "aiohttp, http1"
            )
    return resolved


async def run(args: argparse.Namespace, server: TargetServer) -> tuple[str, list[str]]:
    """Measure every client at every concurrency; returns the Markdown table and any failures."""
    url = f"{server.base_url}/item"
    rows: list[list[object]] = []
    failures: list[str] = []
    for label, factory in resolve_clients(args.clients.split(",")):
        for concurrency in args.concurrency:
            runs: list[Phase] = []
            for _ in range(args.repeat):
                async with factory(url, args.pool) as fetch:
                    runs.append(
                        await run_phase(
                            fetch,
                            concurrency=concurrency,
                            duration_s=args.duration,
                            warmup_s=args.warmup,
                            server=server,
                        )
                    )
            phase = quietest(runs)
            failures += [
                f"{label}, concurrency {concurrency}: {r.first_error}"
                for r in runs
                if r.first_error
            ]
            print(
                f"  {label}, concurrency {concurrency}: {phase.rate:,.0f} req/s",
                file=sys.stderr,
                flush=True,
            )
            rows.append(
                [
                    label,
                    concurrency,
                    phase.rate,
                    phase.p_ms(50),
                    phase.p_ms(99),
                    phase.client_cpu_us_per_call,
                    phase.client_cpu_pct,
                    phase.server_cpu_pct,
                    phase.other_cpu_pct,
                    phase.errors,
                ]
            )
    headers = [
        "client",
        "concurrency",
        "req/s",
        "p50 ms",
        "p99 ms",
        "client CPU µs/req",
        "client CPU %",
        "server CPU %",
        "other CPU %",
        "errors",
    ]
    return markdown_table(headers, rows), failures


def main(argv: list[str] | None = None) -> None:
    """Parse options, start the target API, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="discarded seconds per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--clients", default=",".join(DEFAULT_CLIENTS))
    parser.add_argument("--pool", type=int, default=100, help="connections per client")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per row; the one least disturbed by other processes is reported",
    )
    args = parser.parse_args(argv)

    client_cpu, server_cpu = cpu_placement()
    pin_to_cpu(client_cpu)
    with TargetServer(cpu=server_cpu) as server:
        table, failures = asyncio.run(run(args, server))
    versions = ", ".join(
        f"{p} {_version(p) or 'not installed'}"
        for p in ("httpx", "httpcore", "aiohttp", "httpx-aiohttp")
    )
    print(f"## Outbound HTTP client: GET of a {len(ITEM_BODY)}-byte JSON body on 127.0.0.1\n")
    print(f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"- command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"- Python {platform.python_version()}; {versions}")
    print(f"- {describe_placement(client_cpu, server_cpu)}")
    print(
        f"- {args.warmup:g} s warm-up + {args.duration:g} s measured per run; pool {args.pool}; "
        f"{args.repeat} run(s) per row, the least disturbed reported (see other CPU %)\n"
    )
    print(table)
    if failures:
        print("\nFailed requests (first error of each failing run):")
        print("\n".join(f"- {failure}" for failure in failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
