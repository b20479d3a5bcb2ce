"""The Secrets page: names, sources and update times (never values), set and delete.

Values are write-only: the form posts one, :meth:`Admin.put_secret` encrypts it, and no page
ever renders it again (not even after a failed save).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.dashboard.pages import AdminForm, AdminSession, Dash, Dashboard, PageTable
from gateway.admin.dashboard.session import Session
from gateway.errors import RequestError

__all__ = ["pages"]

pages = PageTable()


async def _secrets_page(
    request: Request,
    dash: Dashboard,
    session: Session,
    status: int = 200,
    error: RequestError | None = None,
    name: str = "",
) -> Response:
    """The Secrets page, with the error of a failed save or delete and the name that was typed."""
    admin = await dash.admin(request)
    try:
        secrets = await admin.list_secrets()
    except RequestError as e:
        secrets, error = [], error or e
    params = request.query_params
    return dash.render(
        request,
        "secrets.html",
        session,
        status,
        secrets=secrets,
        error=error,
        name=name,
        saved=params.get("saved", ""),
        deleted=params.get("deleted", ""),
    )


@pages.get("/secrets")
async def secrets(request: Request, dash: Dash, session: AdminSession) -> Response:
    return await _secrets_page(request, dash, session)


@pages.post("/secrets")
async def put_secret(request: Request, dash: Dash, posted: AdminForm) -> Response:
    session, form = posted.session, posted.form
    admin = await dash.admin(request)
    name = form.get("name", "").strip()
    try:
        if name.startswith("_"):
            # The store keeps internal rows (the admin token's hash) under "_" names.
            raise RequestError(422, "name must not start with _", "invalid_secret", "name")
        await admin.put_secret(name, form.get("value", ""))
    except RequestError as e:
        return await _secrets_page(request, dash, session, e.status, error=e, name=name)
    return RedirectResponse(f"/secrets?{urlencode({'saved': name})}", status_code=303)


@pages.post("/secrets/{name}/delete")
async def delete_secret(name: str, request: Request, dash: Dash, posted: AdminForm) -> Response:
    session = posted.session
    admin = await dash.admin(request)
    try:
        await admin.delete_secret(name)
    except RequestError as e:
        return await _secrets_page(request, dash, session, e.status, error=e)
    return RedirectResponse(f"/secrets?{urlencode({'deleted': name})}", status_code=303)
