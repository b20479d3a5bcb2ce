"""Mount point for MCP over streamable HTTP that loads the MCP SDK only when first used.

Importing the SDK costs about 25 MB and 1.7 s; a gateway nobody reaches over MCP pays neither.
The SDK's session manager must be entered and left by one task, so it runs in its own task,
started on the first request and stopped by :meth:`LazyMcp.close` at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.extras import MissingExtra, require_extra

__all__ = ["LazyMcp"]


class LazyMcp:
    """An ASGI app for ``/mcp`` that builds :class:`gateway.mcp.http.McpHttp` on demand."""

    def __init__(self, backend: Callable[[], Any]) -> None:
        self._backend = backend
        self._app: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    async def _start(self) -> Any:
        async with self._lock:
            if self._app is not None:
                return self._app
            from gateway.mcp.http import McpHttp

            app = McpHttp(self._backend)
            ready = asyncio.Event()

            async def run() -> None:
                async with app.run():
                    ready.set()
                    await self._stop.wait()

            self._task = asyncio.create_task(run())
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            if self._task.done():
                waiter.cancel()
                await self._task  # raises why MCP could not start
            self._app = app
            return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                require_extra("mcp", "mcp", "the MCP endpoint")
            except MissingExtra as e:
                body = orjson.dumps({"error": {"message": str(e), "code": "mcp_not_installed"}})
                await Response(body, status_code=501, media_type="application/json")(
                    scope, receive, send
                )
                return
        app = self._app if self._app is not None else await self._start()
        await app(scope, receive, send)

    async def close(self) -> None:
        """Stop the session manager if it was started."""
        if self._task is not None:
            self._stop.set()
            await self._task
