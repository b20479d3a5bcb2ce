"""A local action API for executor tests: records what it receives and misbehaves on request."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    method: str
    path: str
    raw_path: str
    query_string: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ActionAPI:
    """State shared by the handlers; tests read ``received`` and tune the knobs."""

    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    fail_times: int = 0
    token_requests: int = 0
    token_lifetime: int = 3600
    current_token: str = ""
    token_gate: asyncio.Event | None = None

    def last(self) -> Received:
        return self.received[-1]


GZIP_BOMB = gzip.compress(b"\0" * (64 << 20), compresslevel=9)


def build_app(state: ActionAPI) -> web.Application:
    async def record(request: web.Request) -> Received:
        item = Received(
            request.method,
            request.path,
            request.raw_path,
            request.query_string,
            dict(request.headers),
            await request.read(),
        )
        state.received.append(item)
        return item

    async def echo(request: web.Request) -> web.Response:
        item = await record(request)
        return web.json_response(
            {
                "method": item.method,
                "raw_path": item.raw_path,
                "query": item.query_string,
                "body": item.body.decode("utf-8", "replace"),
            }
        )

    async def status(request: web.Request) -> web.Response:
        await record(request)
        code = int(request.match_info["code"])
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.json_response({"error": f"status {code}"}, status=code, headers=headers)

    async def flaky(request: web.Request) -> web.Response:
        await record(request)
        if state.fail_times > 0:
            state.fail_times -= 1
            return web.json_response({"error": "try again"}, status=503)
        return web.json_response({"ok": True})

    async def drip(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for _ in range(600):
            await response.write(b".")
            await asyncio.sleep(0.05)
        return response

    async def huge(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=b"x" * (5 << 20), content_type="text/plain")

    async def bomb(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(
            body=GZIP_BOMB,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def token(request: web.Request) -> web.Response:
        await record(request)
        state.token_requests += 1
        if state.token_gate is not None:
            await state.token_gate.wait()
        state.current_token = f"tok-{state.token_requests}-abcdef"
        return web.json_response(
            {
                "access_token": state.current_token,
                "token_type": "Bearer",
                "expires_in": state.token_lifetime,
            }
        )

    async def protected(request: web.Request) -> web.Response:
        item = await record(request)
        if item.headers.get("Authorization") != f"Bearer {state.current_token}":
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({"ok": True, "token": "used"})

    async def secret_echo(request: web.Request) -> web.Response:
        item = await record(request)
        # A careless API that echoes the credentials it was sent back in its body.
        return web.json_response({"you_sent": dict(item.headers), "query": item.query_string})

    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/flaky", flaky)
    app.router.add_get("/drip", drip)
    app.router.add_get("/huge", huge)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/redirect", redirect)
    app.router.add_post("/token", token)
    app.router.add_route("*", "/protected", protected)
    app.router.add_route("*", "/secret-echo", secret_echo)
    return app


@asynccontextmanager
async def running_api() -> AsyncIterator[ActionAPI]:
    state = ActionAPI()
    runner = web.AppRunner(build_app(state), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.base_url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def body_json(item: Received) -> Any:
    return json.loads(item.body)
