"""The Logs pages: every execution, one action's Logs tab, one record, and a JSON lines download.

The Logs page and an action's tab render the table of :file:`templates/_logtable.html` for the
filter form of :mod:`.log_filters` (an action's tab is the same query with the action fixed, so
its links never carry an ``action`` filter), keyset-paged by :mod:`gateway.stores.log_queries`.
The table shows one line per execution; ``/logs/{id}`` shows every field of one record, as
stored (so redacted). ``/logs.jsonl`` streams the current filter's records, one JSON object a
line exactly as ``GET /api/logs`` and ``actiongate logs --json`` print them, read a page at a
time so a large log is never held in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from gateway.admin.dashboard.log_filters import LogForm, read_log_form
from gateway.admin.dashboard.pages import SECURITY_HEADERS, AdminSession, Dash, Dashboard, PageTable
from gateway.admin.dashboard.session import Session
from gateway.admin.dashboard.views import log_detail, log_rows
from gateway.admin.service import Admin
from gateway.errors import RequestError
from gateway.stores.log_queries import iter_records, query_page
from gateway.stores.logs import MAX_PAGE_SIZE, OUTCOMES

__all__ = ["PAGE_SIZE", "pages"]

PAGE_SIZE = 50

pages = PageTable()


async def _page_of(admin: Admin, form: LogForm, cursor: str | None) -> tuple[list[Any], str | None]:
    """The records of one page, and the next page's cursor; raises ValueError for a bad cursor."""
    await admin.runtime.logstore.flush()
    return await query_page(
        admin.runtime.engine, form.where, limit=min(PAGE_SIZE, MAX_PAGE_SIZE), cursor=cursor
    )


async def _logs_page(
    request: Request, dash: Dashboard, session: Session, template: str, **extra: Any
) -> Response:
    """One page of executions, filtered by the query (``extra["action"]`` fixes the action)."""
    admin = await dash.admin(request)
    fixed = extra["action"]["tool_name"] if "action" in extra else None
    form = read_log_form(request.query_params, action=fixed)
    cursor = request.query_params.get("cursor") or None
    records: list[Any] = []
    next_cursor = error = None
    if form.error is not None:
        error = form.error
    else:
        try:
            records, next_cursor = await _page_of(admin, form, cursor)
        except ValueError:
            error = "That page link is no longer valid."
    path = request.url.path
    return dash.render(
        request,
        template,
        session,
        rows=log_rows(records),
        filters=form.values,
        outcomes=OUTCOMES,
        agent_ids=sorted(admin.workspace.agents),
        next_link=form.link(path, cursor=next_cursor) if next_cursor else None,
        first_link=form.link(path) if cursor else None,
        download_link=form.link("/logs.jsonl") if fixed is None else None,
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


@pages.get("/logs.jsonl")
async def logs_download(request: Request, dash: Dash, session: AdminSession) -> Response:
    admin = await dash.admin(request)
    form = read_log_form(request.query_params)
    if form.error is not None:
        return PlainTextResponse(form.error, status_code=400, headers=SECURITY_HEADERS)
    await admin.runtime.logstore.flush()
    engine = admin.runtime.engine

    async def lines() -> AsyncIterator[bytes]:
        async for record in iter_records(engine, form.where):
            yield orjson.dumps(record.to_dict()) + b"\n"

    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": 'attachment; filename="actiongate-logs.jsonl"',
    }
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)


@pages.get("/logs/{record_id}")
async def log_record(
    record_id: str, request: Request, dash: Dash, session: AdminSession
) -> Response:
    admin = await dash.admin(request)
    store = admin.runtime.logstore
    await store.flush()
    record = None if "\x00" in record_id else await store.get(record_id)
    if record is None:
        return dash.render(request, "not_found.html", session, 404, what="Log record")
    return dash.render(request, "log_record.html", session, record=log_detail(record))
