"""The client fronts' own route table: ``POST`` to a front's path goes straight to its handler.

The fronts are the gateway's hot path: every completion, every tool loop. Routed by the
framework, each request passes its exception middleware, router, route match and the endpoint
wrapper, each another frame resumed at every await and another wrapper around ``send``.
:class:`FrontRoutes` sits innermost in the middleware stack (inside the request id, telemetry and
the browser guard, which still see every request) and answers the fronts itself, with the app's
own exception handlers; every other request goes on to the framework unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["FrontRoutes"]

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Any]


class FrontRoutes:
    """ASGI middleware: ``POST`` to one of ``routes`` runs its endpoint, all else passes on.

    Args:
        app: The rest of the application.
        routes: Endpoint by exact path.
        handlers: The app's exception handlers by exception class (read per error, so handlers
            added later count). An exception no handler takes (``Exception`` included, which
            the outermost server-error middleware answers) propagates as it would have.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[str, Endpoint],
        handlers: Mapping[Any, ErrorHandler],
    ) -> None:
        self.app = app
        self._routes = dict(routes)
        self._handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self._routes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as e:
            handler = self._handler_for(e)
            if handler is None:
                raise
            response = await handler(request, e)
        await response(scope, receive, send)

    def _handler_for(self, error: Exception) -> ErrorHandler | None:
        for cls in type(error).__mro__:
            if cls is Exception:
                return None  # the server-error middleware's: a 500, logged
            handler = self._handlers.get(cls)
            if handler is not None:
                return handler
        return None
