"""The dashboard's pages (SPEC §7): server-rendered, every change made through :class:`Admin`.

Pages need a session made by logging in with the admin token; every POST carries the session's
CSRF token (:mod:`gateway.admin.dashboard.pages`). The Custom Actions pages live in
:mod:`gateway.admin.dashboard.action_pages` and the Secrets page in
:mod:`gateway.admin.dashboard.secret_pages`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.dashboard.action_pages import add_action_pages
from gateway.admin.dashboard.pages import (
    Dashboard,
    checked,
    forbidden,
    mount_static,
    read_form,
    read_form_lists,
)
from gateway.admin.dashboard.secret_pages import add_secret_pages
from gateway.admin.dashboard.session import COOKIE, Session
from gateway.admin.dashboard.views import log_rows
from gateway.errors import RequestError
from gateway.stores.logs import MAX_PAGE_SIZE, OUTCOMES

if TYPE_CHECKING:
    from gateway.app import Services

__all__ = ["build_dashboard", "mount_static"]

PAGE_SIZE = 50


def build_dashboard(services_of: Callable[[Request], Services]) -> APIRouter:
    """The dashboard routes; ``services_of(request)`` finds the app's :class:`Services`."""
    dash = Dashboard(services_of)
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def home() -> Response:
        return RedirectResponse("/actions", status_code=303)

    @router.get("/login")
    async def login_page(request: Request) -> Response:
        session = dash.session(request) or dash.signer(request).new(admin=False)
        response = dash.render(request, "login.html", session, error=None)
        dash.set_cookie(request, response, session)
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        session = dash.session(request)
        form = await read_form(request)
        if session is None or form.get("csrf") != session.csrf:
            return forbidden()
        if not services_of(request).token.accepts(form.get("token", "").strip()):
            return dash.render(request, "login.html", session, 401, error="Wrong admin token.")
        response = RedirectResponse("/actions", status_code=303)
        dash.set_cookie(request, response, dash.signer(request).new(admin=True))
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        if not checked(dash.session(request), await read_form(request)):
            return forbidden()
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # --- Custom Actions and Secrets ------------------------------------------------------

    add_action_pages(router, dash)
    add_secret_pages(router, dash)

    async def logs_page(
        request: Request, session: Session, template: str, **extra: Any
    ) -> Response:
        admin = await dash.admin(request)
        params = request.query_params
        filters = {
            "action": extra.get("action", {}).get("tool_name") or params.get("action") or None,
            "outcome": params.get("outcome") if params.get("outcome") in OUTCOMES else None,
            "conversation_id": params.get("conversation_id") or None,
        }
        store = admin.runtime.logstore
        await store.flush()
        error = None
        try:
            records, next_cursor = await store.query(
                **filters, limit=min(PAGE_SIZE, MAX_PAGE_SIZE), cursor=params.get("cursor") or None
            )
        except ValueError:
            records, next_cursor, error = [], None, "That page link is no longer valid."
        next_link = None
        if next_cursor:
            keep = {
                k: v for k, v in filters.items() if v and not (k == "action" and "action" in extra)
            }
            next_link = f"{request.url.path}?{urlencode({**keep, 'cursor': next_cursor})}"
        return dash.render(
            request,
            template,
            session,
            rows=log_rows(records),
            filters=filters,
            outcomes=OUTCOMES,
            next_link=next_link,
            first_link=request.url.path if params.get("cursor") else None,
            error=error,
            tab="logs",
            **extra,
        )

    @router.get("/actions/{tool_name}/logs")
    async def action_logs(tool_name: str, request: Request) -> Response:
        session = dash.session(request)
        if session is None or not session.admin:
            return dash.login_redirect()
        admin = await dash.admin(request)
        try:
            definition = admin.get_action(tool_name)
        except RequestError:
            return dash.render(request, "not_found.html", session, 404, what="Action")
        return await logs_page(request, session, "action_logs.html", action=definition)

    @router.get("/logs")
    async def logs(request: Request) -> Response:
        session = dash.session(request)
        if session is None or not session.admin:
            return dash.login_redirect()
        admin = await dash.admin(request)
        return await logs_page(
            request, session, "logs.html", action_names=sorted(admin.workspace.actions)
        )

    # --- Agents ----------------------------------------------------------------------------

    @router.get("/agents")
    async def agents(request: Request) -> Response:
        session = dash.session(request)
        if session is None or not session.admin:
            return dash.login_redirect()
        admin = await dash.admin(request)
        return dash.render(request, "agents.html", session, agents=admin.list_agents())

    @router.get("/agents/{agent_id}")
    async def agent(agent_id: str, request: Request) -> Response:
        session = dash.session(request)
        if session is None or not session.admin:
            return dash.login_redirect()
        admin = await dash.admin(request)
        try:
            data = admin.get_agent(agent_id)
        except RequestError:
            return dash.render(request, "not_found.html", session, 404, what="Agent")
        return dash.render(
            request,
            "agent.html",
            session,
            agent=data,
            actions=admin.list_actions(),
            saved=request.query_params.get("saved") == "1",
        )

    @router.post("/agents/{agent_id}/actions")
    async def save_agent_actions(agent_id: str, request: Request) -> Response:
        session = dash.session(request)
        form, lists = await read_form_lists(request)
        if not checked(session, form):
            return forbidden()
        admin = await dash.admin(request)
        wanted = set(lists.get("action", []))
        current = set(admin.get_agent(agent_id)["enabled_actions"])
        for tool in sorted(admin.workspace.actions):
            if (tool in wanted) != (tool in current):
                await admin.toggle(agent_id, tool, tool in wanted)
        return RedirectResponse(f"/agents/{agent_id}?saved=1", status_code=303)

    # --- Playground ------------------------------------------------------------------------

    @router.get("/playground")
    async def playground(request: Request) -> Response:
        session = dash.session(request)
        if session is None or not session.admin:
            return dash.login_redirect()
        admin = await dash.admin(request)
        agents = admin.list_agents()
        # By default, the first agent the playground can call without a client key.
        open_ids = [
            a["id"] for a in agents if (v := admin.workspace.view(a["id"])) and v.accepts(None)
        ]
        chosen = request.query_params.get("agent") or next(
            iter(open_ids or [a["id"] for a in agents]), ""
        )
        view = admin.workspace.view(chosen)
        return dash.render(
            request,
            "playground.html",
            session,
            agents=agents,
            agent=chosen if view else "",
            needs_key=view is not None and not view.accepts(None),
        )

    return router
