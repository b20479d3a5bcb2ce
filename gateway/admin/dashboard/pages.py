"""Request handling shared by the dashboard's pages: sessions, CSRF, forms and rendering.

Templates are autoescaped and the page scripts insert text with ``textContent``, so nothing a
customer, a model or an action's API wrote is ever parsed as HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from gateway.admin.dashboard.forms import FormData
from gateway.admin.dashboard.session import COOKIE, Session, SessionSigner
from gateway.admin.dashboard.views import pretty
from gateway.admin.service import Admin
from gateway.errors import ConfigError, DefinitionError, RequestError

if TYPE_CHECKING:
    from gateway.app import Services

__all__ = [
    "Dashboard",
    "checked",
    "definition_error",
    "forbidden",
    "mount_static",
    "read_form",
    "read_form_lists",
]

HERE = Path(__file__).parent
MAX_FORM_BYTES = 1 << 20
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
_env.filters["pretty"] = pretty


def mount_static(app: FastAPI) -> None:
    """Serve the dashboard's scripts and styles under ``/static``."""
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (last value wins for scalars)."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise RequestError(413, "form too large", "too_large")
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


async def read_form_lists(request: Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    """A form whose repeated fields (checkboxes) matter, as last-wins scalars and as lists."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise RequestError(413, "form too large", "too_large")
    pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    lists: dict[str, list[str]] = {}
    for key, value in pairs:
        lists.setdefault(key, []).append(value)
    return dict(pairs), lists


def definition_error(e: ConfigError) -> RequestError:
    """A definition error as a 422 naming the field it is about."""
    param = e.field if isinstance(e, DefinitionError) else None
    return RequestError(422, str(e), code="invalid_definition", param=param)


class Dashboard:
    """Request handling shared by the routes: sessions, CSRF and rendering."""

    def __init__(self, services_of: Callable[[Request], Services]) -> None:
        self.services_of = services_of
        self._signer: SessionSigner | None = None

    def signer(self, request: Request) -> SessionSigner:
        """The signer, keyed from the admin token so every replica accepts the same cookie."""
        if self._signer is None:
            self._signer = SessionSigner(self.services_of(request).token.derive_key(b"dashboard"))
        return self._signer

    def session(self, request: Request) -> Session | None:
        return self.signer(request).load(request.cookies.get(COOKIE))

    def set_cookie(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.signer(request).dump(session),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        page = _env.get_template(template).render(
            csrf=session.csrf if session else "", path=request.url.path, **context
        )
        return HTMLResponse(page, status_code=status, headers=_SECURITY_HEADERS)

    async def admin(self, request: Request) -> Admin:
        admin = self.services_of(request).admin
        await admin.refresh()
        return admin

    def admin_session(self, request: Request) -> Session | None:
        """The session when it is logged in as admin (pages redirect to the login otherwise)."""
        session = self.session(request)
        return session if session is not None and session.admin else None

    def login_redirect(self) -> Response:
        return RedirectResponse("/login", status_code=303)


def checked(session: Session | None, form: FormData) -> bool:
    """Whether a POST comes from a logged-in admin's own page (its CSRF token matches)."""
    return session is not None and session.admin and form.get("csrf") == session.csrf


def forbidden() -> Response:
    """The answer to a POST without a valid CSRF token."""
    return HTMLResponse("Forbidden: missing or invalid form token.", status_code=403)
