"""Logging in and out of the dashboard with the admin token.

The login page sets a session cookie before anyone logs in, so the login form carries a CSRF
token too; logging in replaces that session with an admin one.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.dashboard.pages import Dash, PageTable, checked, forbidden, read_form
from gateway.admin.dashboard.session import COOKIE

__all__ = ["pages"]

pages = PageTable()


@pages.get("/")
async def home() -> Response:
    return RedirectResponse("/actions", status_code=303)


@pages.get("/login")
async def login_page(request: Request, dash: Dash) -> Response:
    session = dash.session(request) or dash.signer(request).new(admin=False)
    response = dash.render(request, "login.html", session, error=None)
    dash.set_cookie(request, response, session)
    return response


@pages.post("/login")
async def login(request: Request, dash: Dash) -> Response:
    session = dash.session(request)
    form = await read_form(request)
    if session is None or form.get("csrf") != session.csrf:
        return forbidden()
    if not dash.backend_of(request).token.accepts(form.get("token", "").strip()):
        return dash.render(request, "login.html", session, 401, error="Wrong admin token.")
    response = RedirectResponse("/actions", status_code=303)
    dash.set_cookie(request, response, dash.signer(request).new(admin=True))
    return response


@pages.post("/logout")
async def logout(request: Request, dash: Dash) -> Response:
    if not checked(dash.session(request), await read_form(request)):
        return forbidden()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
