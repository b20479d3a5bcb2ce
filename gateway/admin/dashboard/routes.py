"""The dashboard's router: every page, in the order that decides which route answers.

The pages are server-rendered and every change goes through :class:`~gateway.admin.service.Admin`
(README, "Admin API and dashboard"). They need a session made by logging in with the admin
token, and every POST carries the session's CSRF token (:mod:`gateway.admin.dashboard.pages`).
:func:`mount_static` adds the static files and the HTML 404 page (:mod:`.install`).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request

from gateway.admin.dashboard import (
    action_pages,
    agent_pages,
    guardrail_pages,
    log_pages,
    login_pages,
    overview_pages,
    playground,
    secret_pages,
    wizard_pages,
)
from gateway.admin.dashboard.install import mount_static
from gateway.admin.dashboard.pages import Dashboard, DashboardBackend, DashboardRoute

__all__ = ["build_dashboard", "mount_static"]

_PAGES = (
    login_pages.pages,
    overview_pages.pages,
    # Before action_pages: /actions/new must answer before /actions/{tool_name} does.
    wizard_pages.pages,
    action_pages.pages,
    guardrail_pages.pages,
    secret_pages.pages,
    log_pages.pages,
    agent_pages.pages,
    playground.pages,
)


def build_dashboard(backend_of: Callable[[Request], DashboardBackend]) -> APIRouter:
    """The dashboard routes; ``backend_of(request)`` finds the running gateway's parts.

    The app's :class:`~gateway.app.Services` is such a backend. Each call makes a dashboard of
    its own (its session signer included), which its router's dependency binds to each request.
    """
    dash = Dashboard(backend_of)
    router = APIRouter(
        include_in_schema=False, route_class=DashboardRoute, dependencies=[Depends(dash.bind)]
    )
    for table in _PAGES:
        table.add_to(router)
    return router
