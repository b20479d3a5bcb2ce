"""The Logs pages: every execution, and one action's Logs tab, with filters and keyset paging.

Both render the table of :file:`templates/_logtable.html`; an action's tab is the same query
with the action fixed (so its links never carry an ``action`` filter).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response

from gateway.admin.dashboard.pages import AdminSession, Dash, Dashboard, PageTable
from gateway.admin.dashboard.session import Session
from gateway.admin.dashboard.views import log_rows
from gateway.errors import RequestError
from gateway.stores.logs import MAX_PAGE_SIZE, OUTCOMES

__all__ = ["PAGE_SIZE", "pages"]

PAGE_SIZE = 50

pages = PageTable()


async def _logs_page(
    request: Request, dash: Dashboard, session: Session, template: str, **extra: Any
) -> Response:
    """One page of executions, filtered by the query (``extra["action"]`` fixes the action)."""
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
        keep = {k: v for k, v in filters.items() if v and not (k == "action" and "action" in extra)}
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


@pages.get("/actions/{tool_name}/logs")
async def action_logs(
    tool_name: str, request: Request, dash: Dash, session: AdminSession
) -> Response:
    admin = await dash.admin(request)
    try:
        definition = admin.get_action(tool_name)
    except RequestError:
        return dash.render(request, "not_found.html", session, 404, what="Action")
    return await _logs_page(request, dash, session, "action_logs.html", action=definition)


@pages.get("/logs")
async def logs(request: Request, dash: Dash, session: AdminSession) -> Response:
    admin = await dash.admin(request)
    return await _logs_page(
        request, dash, session, "logs.html", action_names=sorted(admin.workspace.actions)
    )
