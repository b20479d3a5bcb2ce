"""Logging in and out of the dashboard with the admin token.

The login page sets a session cookie before anyone logs in, so the login form carries a CSRF
token too; logging in replaces that session with an admin one. A POST without that session is
refused before its body is read, and wrong tokens back off per client address, sharing the
admin API's count (:mod:`gateway.admin.backoff`): a refused address gets the login page with a
429 and ``Retry-After``, its body unread and its token unchecked.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.backoff import TooManyAttempts, backoff_of, client_address
from gateway.admin.dashboard.pages import (
    AdminForm,
    Dash,
    PageTable,
    Posted,
    Refused,
    forbidden,
    read_posted,
)
from gateway.admin.dashboard.session import COOKIE

__all__ = ["LANDING", "pages"]

LANDING = "/overview"
"""Where logging in leads (and ``/``, see :mod:`.overview_pages`)."""

pages = PageTable()


async def login_form(request: Request, dash: Dash) -> Posted:
    """The login form, once the browser's session and its address's backoff allow reading it.

    Raises:
        Refused: 403 without the login page's session, 429 while the address backs off, 413
            for a form over the cap, 403 for a wrong CSRF token.
    """
    session = dash.session(request)
    if session is None:
        raise Refused(forbidden())
    try:
        backoff_of(request.app).check(client_address(request))
    except TooManyAttempts as e:
        error = f"Too many wrong admin tokens from this address: try again in {e.retry_after_s} s."
        page = dash.render(request, "login.html", session, 429, error=error)
        page.headers.update(e.headers)
        raise Refused(page) from None
    return await read_posted(request, session)


LoginForm = Annotated[Posted, Depends(login_form)]


@pages.get("/login")
async def login_page(request: Request, dash: Dash) -> Response:
    session = dash.session(request) or dash.signer(request).new(admin=False)
    response = dash.render(request, "login.html", session, error=None)
    dash.set_cookie(request, response, session)
    return response


@pages.post("/login")
async def login(request: Request, dash: Dash, posted: LoginForm) -> Response:
    backoff, address = backoff_of(request.app), client_address(request)
    presented = posted.form.get("token", "").strip()
    if not dash.backend_of(request).token.accepts(presented):
        if presented:  # only a presented token is a guess
            backoff.failed(address)
        return dash.render(request, "login.html", posted.session, 401, error="Wrong admin token.")
    backoff.succeeded(address)
    response = RedirectResponse(LANDING, status_code=303)
    dash.set_cookie(request, response, dash.signer(request).new(admin=True))
    return response


@pages.post("/logout")
async def logout(_posted: AdminForm) -> Response:
    """Forget the session (the form's token proves the admin's own page asked)."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
