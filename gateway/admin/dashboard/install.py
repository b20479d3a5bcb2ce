"""What the dashboard adds to the app besides its routes: static files and two error answers.

- An unknown path that is the dashboard's (not under ``/api``, ``/v1``, ``/mcp``, ``/static``,
  ``/healthz`` or ``/metrics``, whose 404s stay JSON) gets an HTML 404 page: with the sidebar
  for a logged-in admin, with a link to the login page for anyone else.
- A :class:`~gateway.admin.backoff.TooManyAttempts` (a 429 of the admin API) gets its
  ``Retry-After`` header.

Both wrap the handler the app already has for that exception (the app's JSON error shape), so
the app must install its own handlers first; everything else still goes to those.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from gateway.admin.backoff import TooManyAttempts
from gateway.admin.dashboard.pages import HERE, Dashboard, DashboardBackend
from gateway.errors import RequestError

__all__ = ["JSON_PREFIXES", "is_dashboard_path", "mount_static"]

JSON_PREFIXES = ("/api", "/v1", "/mcp", "/static", "/healthz", "/metrics")
"""Path families that answer JSON errors, never the dashboard's pages."""

Handler = Callable[[Request, Any], Response | Awaitable[Response]]


async def _answer(handler: Handler, request: Request, e: Exception) -> Response:
    response = handler(request, e)
    return await response if isawaitable(response) else response


def is_dashboard_path(path: str) -> bool:
    """Whether an unknown ``path`` is the dashboard's (so its 404 is a page)."""
    return not any(path == p or path.startswith(p + "/") for p in JSON_PREFIXES)


def _services(request: Request) -> DashboardBackend:
    backend: DashboardBackend = request.app.state.services
    return backend


def _not_found_pages(dash: Dashboard, previous: Handler) -> Handler:
    async def on_http_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, HTTPException)
        if e.status_code != 404 or not is_dashboard_path(request.url.path):
            return await _answer(previous, request, e)
        session = dash.session(request)
        if session is None or not session.admin:
            return dash.render(request, "not_found_public.html", None, 404)
        return dash.render(request, "not_found.html", session, 404, what="Page")

    return on_http_error


def _retry_after(previous: Handler) -> Handler:
    async def on_request_error(request: Request, e: Exception) -> Response:
        response = await _answer(previous, request, e)
        if isinstance(e, TooManyAttempts):
            response.headers.update(e.headers)
        return response

    return on_request_error


def mount_static(
    app: FastAPI, backend_of: Callable[[Request], DashboardBackend] = _services
) -> None:
    """Serve the dashboard's scripts and styles under ``/static``; add the two error answers.

    Call it after the app's own exception handlers are installed (they are wrapped).
    ``backend_of`` finds the running gateway's parts, as for
    :func:`~gateway.admin.dashboard.routes.build_dashboard`.
    """
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    handlers = app.exception_handlers
    if (http := handlers.get(HTTPException)) is not None:
        app.add_exception_handler(HTTPException, _not_found_pages(Dashboard(backend_of), http))
    if (request_error := handlers.get(RequestError)) is not None:
        app.add_exception_handler(RequestError, _retry_after(request_error))
