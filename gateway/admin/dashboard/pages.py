"""Request handling shared by the dashboard's pages: sessions, CSRF, forms and rendering.

Templates are autoescaped and the page scripts insert text with ``textContent``, so nothing a
customer, a model or an action's API wrote is ever parsed as HTML; bidi controls in that text
are printed as escapes (:func:`~gateway.admin.dashboard.views.shown`), so none reorders a page.

Every dashboard router carries its :class:`Dashboard` (``Depends(dash.bind)``); the handlers
reach it with :data:`Dash`, and the GET pages take the logged-in admin's session with
:data:`AdminSession`, which sends any other browser to the login page. A form's POST handler
takes :data:`AdminForm`: the session is checked before a byte of the body is read, the body is
read up to :data:`MAX_FORM_BYTES` (413 past it), then its CSRF token is checked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from gateway.admin.dashboard.session import COOKIE, Session, SessionSigner, csrf_matches
from gateway.admin.dashboard.views import pretty, shown, template_parts
from gateway.admin.service import Admin
from gateway.errors import ConfigError, DefinitionError, RequestError
from gateway.net.inbound import read_body_bytes
from gateway.proxy.loop import Proxy
from gateway.stores.secrets import AdminToken

__all__ = [
    "HERE",
    "MAX_FORM_BYTES",
    "SECURITY_HEADERS",
    "AdminForm",
    "AdminSession",
    "Dash",
    "Dashboard",
    "DashboardBackend",
    "DashboardRoute",
    "LoginRequired",
    "PageTable",
    "Posted",
    "Refused",
    "definition_error",
    "forbidden",
    "read_posted",
]

HERE = Path(__file__).parent
MAX_FORM_BYTES = 1 << 20
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": with it the browser sends "Origin: null" even on the dashboard's own
    # form posts and fetches, which the browser guard refuses. "same-origin" still sends no
    # referrer (nor origin) to any other site.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    finalize=shown,
)
_env.filters["pretty"] = pretty
_env.filters["template_parts"] = template_parts


class Refused(Exception):
    """A request answered before its handler runs (by :class:`DashboardRoute`) with ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def forbidden() -> Response:
    """The answer to a POST without an admin session or a valid CSRF token."""
    return HTMLResponse("Forbidden: missing or invalid form token.", status_code=403)


@dataclass(frozen=True, slots=True)
class Posted:
    """A form POST whose session and CSRF token were checked."""

    session: Session
    form: dict[str, str]
    """The fields, last value winning for a repeated one."""
    lists: dict[str, list[str]]
    """Every value of each field (checkboxes)."""


async def read_posted(request: Request, session: Session) -> Posted:
    """Read a form for ``session`` (capped) and check its CSRF token.

    Call it only once the session is known to be allowed to post: the body is read here.

    Raises:
        Refused: 413 for a form over :data:`MAX_FORM_BYTES`, 403 for a missing or wrong token.
    """
    try:
        raw = await read_body_bytes(request, MAX_FORM_BYTES)
    except RequestError:
        message = f"Form too large: the limit is {MAX_FORM_BYTES} bytes."
        raise Refused(HTMLResponse(message, status_code=413)) from None
    pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    lists: dict[str, list[str]] = {}
    for key, value in pairs:
        lists.setdefault(key, []).append(value)
    form = dict(pairs)
    if not csrf_matches(session, form.get("csrf")):
        raise Refused(forbidden())
    return Posted(session, form, lists)


def definition_error(e: ConfigError) -> RequestError:
    """A definition error as a 422 naming the field it is about."""
    param = e.field if isinstance(e, DefinitionError) else None
    return RequestError(422, str(e), code="invalid_definition", param=param)


class DashboardBackend(Protocol):
    """What the dashboard needs from the running gateway (``app.state.services`` fits)."""

    @property
    def admin(self) -> Admin: ...

    @property
    def token(self) -> AdminToken: ...

    @property
    def proxy(self) -> Proxy: ...


class Dashboard:
    """Request handling shared by the routes: sessions, CSRF and rendering."""

    def __init__(self, backend_of: Callable[[Request], DashboardBackend]) -> None:
        """Create the dashboard.

        Args:
            backend_of: Finds the running gateway's parts for a request (after start-up).
        """
        self.backend_of = backend_of
        self._signer: SessionSigner | None = None

    async def bind(self, request: Request) -> None:
        """Make this the request's dashboard, for :func:`current_dashboard`.

        Used as its router's dependency: FastAPI solves a router's dependencies before those
        of the handler's parameters.
        """
        request.state.dashboard = self

    def signer(self, request: Request) -> SessionSigner:
        """The signer, keyed from the admin token so every replica accepts the same cookie."""
        if self._signer is None:
            self._signer = SessionSigner(self.backend_of(request).token.derive_key(b"dashboard"))
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
        return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)

    async def admin(self, request: Request) -> Admin:
        admin = self.backend_of(request).admin
        await admin.refresh()
        return admin


class LoginRequired(Exception):
    """The browser has no admin session; its page is the login (see :class:`DashboardRoute`)."""


class DashboardRoute(APIRoute):
    """A dashboard route: :class:`LoginRequired` redirects to the login, :class:`Refused` answers.

    The route converts them rather than an app exception handler, so a dashboard router works
    in any app that includes it.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_or_redirect(request: Request) -> Response:
            try:
                return await handle(request)
            except LoginRequired:
                return RedirectResponse("/login", status_code=303)
            except Refused as refused:
                return refused.response

        return handle_or_redirect


async def current_dashboard(request: Request) -> Dashboard:
    """The dashboard whose router answers the request (set by :meth:`Dashboard.bind`)."""
    dash: Dashboard = request.state.dashboard
    return dash


Dash = Annotated[Dashboard, Depends(current_dashboard)]


async def admin_session(request: Request, dash: Dash) -> Session:
    """The session when it is logged in as admin; raises :class:`LoginRequired` otherwise."""
    session = dash.session(request)
    if session is None or not session.admin:
        raise LoginRequired
    return session


AdminSession = Annotated[Session, Depends(admin_session)]


async def admin_form(request: Request, dash: Dash) -> Posted:
    """A logged-in admin's form POST; without an admin session it is refused unread (403).

    Raises:
        Refused: 403 without an admin session or CSRF token, 413 for a form over the cap.
    """
    session = dash.session(request)
    if session is None or not session.admin:
        raise Refused(forbidden())
    return await read_posted(request, session)


AdminForm = Annotated[Posted, Depends(admin_form)]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Response]])


class PageTable:
    """A module's pages, declared once and added to every dashboard's router.

    Each dashboard has a router of its own (its dependency binds that dashboard), so the pages
    cannot be declared on one module-level router.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[str, str, Callable[..., Awaitable[Response]]]] = []

    def get(self, path: str) -> Callable[[Endpoint], Endpoint]:
        """Declare a GET page."""
        return self._declare("GET", path)

    def post(self, path: str) -> Callable[[Endpoint], Endpoint]:
        """Declare a form's POST handler."""
        return self._declare("POST", path)

    def _declare(self, method: str, path: str) -> Callable[[Endpoint], Endpoint]:
        def declare(endpoint: Endpoint) -> Endpoint:
            self._routes.append((method, path, endpoint))
            return endpoint

        return declare

    def add_to(self, router: APIRouter) -> None:
        """Add the pages to ``router`` in declaration order.

        The order decides which route answers a path that two of them match (``/actions/new``
        before ``/actions/{tool_name}``) and which methods a 405 names.
        """
        for method, path, endpoint in self._routes:
            router.add_api_route(path, endpoint, methods=[method])
