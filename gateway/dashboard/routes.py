"""The dashboard's pages (SPEC §7): server-rendered, every change made through :class:`Admin`.

Pages need a session made by logging in with the admin token; every POST carries the session's
CSRF token. Templates are autoescaped and the page scripts insert text with ``textContent``, so
nothing a customer, a model or an action's API wrote is ever parsed as HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from gateway.admin import Admin
from gateway.config import parse_action
from gateway.dashboard.forms import FormData, parse_args, parse_definition, parse_variables
from gateway.dashboard.session import COOKIE, Session, SessionSigner
from gateway.dashboard.views import log_rows, pretty, step_of
from gateway.errors import ConfigError, DefinitionError, RequestError
from gateway.logstore import MAX_PAGE_SIZE, OUTCOMES
from gateway.testrun import run_test_with

if TYPE_CHECKING:
    from gateway.app import Services

__all__ = ["build_dashboard", "mount_static"]

HERE = Path(__file__).parent
PAGE_SIZE = 50
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


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (last value wins for scalars)."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise RequestError(413, "form too large", "too_large")
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


async def _form_lists(request: Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    raw = (await request.body()).decode("utf-8", "replace")
    pairs = parse_qsl(raw, keep_blank_values=True)
    lists: dict[str, list[str]] = {}
    for key, value in pairs:
        lists.setdefault(key, []).append(value)
    return dict(pairs), lists


def _definition_error(e: ConfigError) -> RequestError:
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

    def login_redirect(self) -> Response:
        return RedirectResponse("/login", status_code=303)


def _checked(session: Session | None, form: FormData) -> bool:
    return session is not None and session.admin and form.get("csrf") == session.csrf


def _forbidden() -> Response:
    return HTMLResponse("Forbidden: missing or invalid form token.", status_code=403)


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
        form = await _form(request)
        if session is None or form.get("csrf") != session.csrf:
            return _forbidden()
        if not services_of(request).token.accepts(form.get("token", "").strip()):
            return dash.render(request, "login.html", session, 401, error="Wrong admin token.")
        response = RedirectResponse("/actions", status_code=303)
        dash.set_cookie(request, response, dash.signer(request).new(admin=True))
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        if not _checked(dash.session(request), await _form(request)):
            return _forbidden()
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # --- Custom Actions --------------------------------------------------------------------

    @router.get("/actions")
    async def actions(request: Request) -> Response:
        session = dash.session(request)
        if session is None or not session.admin:
            return dash.login_redirect()
        admin = await dash.admin(request)
        return dash.render(request, "actions.html", session, actions=admin.list_actions())

    async def wizard(
        request: Request,
        session: Session,
        form: FormData,
        status: int = 200,
        error: RequestError | None = None,
        result: dict[str, Any] | None = None,
        checked: list[str] | None = None,
    ) -> Response:
        admin = await dash.admin(request)
        step = 4 if result is not None else step_of(error.param if error else None)
        return dash.render(
            request,
            "action_new.html",
            session,
            status,
            form=form,
            error=error,
            result=result,
            agents=admin.list_agents(),
            checked=checked if checked is not None else [],
            step=step if form else 1,
        )

    @router.get("/actions/new")
    async def new_action(request: Request) -> Response:
        session = dash.session(request)
        if session is None or not session.admin:
            return dash.login_redirect()
        return await wizard(request, session, {})

    @router.post("/actions/new")
    async def create_action(request: Request) -> Response:
        session = dash.session(request)
        form, lists = await _form_lists(request)
        if session is None or not _checked(session, form):
            return _forbidden()
        admin = await dash.admin(request)
        agents = lists.get("agent", [])
        try:
            definition = parse_definition(form)
            if form.get("intent") == "test":
                try:
                    action = parse_action(definition)
                except ConfigError as e:
                    raise _definition_error(e) from None
                result = await run_test_with(
                    admin.runtime,
                    action,
                    parse_variables(form),
                    parse_args(form),
                    dry_run=form.get("dry_run") == "on",
                )
                return await wizard(request, session, form, result=result.as_json(), checked=agents)
            saved = await admin.create_action(definition)
        except RequestError as e:
            return await wizard(request, session, form, 422, error=e, checked=agents)
        tool = saved["tool_name"]
        for agent in admin.list_agents():
            wanted = agent["id"] in agents
            if wanted != (tool in agent["enabled_actions"]):
                await admin.toggle(agent["id"], tool, wanted)
        return RedirectResponse(f"/actions/{tool}?created=1", status_code=303)

    async def action_page(
        request: Request,
        session: Session,
        tool_name: str,
        form: FormData | None = None,
        result: dict[str, Any] | None = None,
        error: RequestError | None = None,
    ) -> Response:
        admin = await dash.admin(request)
        try:
            definition = admin.get_action(tool_name)
        except RequestError:
            return dash.render(request, "not_found.html", session, 404, what="Action")
        return dash.render(
            request,
            "action.html",
            session,
            422 if error else 200,
            action=definition,
            form=form or {},
            result=result,
            error=error,
            created=request.query_params.get("created") == "1",
            tab="test",
        )

    @router.get("/actions/{tool_name}")
    async def show_action(tool_name: str, request: Request) -> Response:
        session = dash.session(request)
        if session is None or not session.admin:
            return dash.login_redirect()
        return await action_page(request, session, tool_name)

    @router.post("/actions/{tool_name}/test")
    async def test_action(tool_name: str, request: Request) -> Response:
        session = dash.session(request)
        form = await _form(request)
        if session is None or not _checked(session, form):
            return _forbidden()
        admin = await dash.admin(request)
        dry_run = form.get("dry_run") == "on"
        try:
            variables, args = parse_variables(form), parse_args(form)
            result = (await admin.test_action(tool_name, variables, args, dry_run)).as_json()
        except RequestError as e:
            return await action_page(request, session, tool_name, form, error=e)
        method = getattr(admin.workspace.actions.get(tool_name), "method", "GET")
        if not dry_run and method != "GET":
            result["warning"] = f"{method} ran for real: it may have changed real data"
        return await action_page(request, session, tool_name, form, result=result)

    @router.post("/actions/{tool_name}/delete")
    async def delete_action(tool_name: str, request: Request) -> Response:
        session = dash.session(request)
        if not _checked(session, await _form(request)):
            return _forbidden()
        admin = await dash.admin(request)
        await admin.delete_action(tool_name)
        return RedirectResponse("/actions", status_code=303)

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
        form, lists = await _form_lists(request)
        if not _checked(session, form):
            return _forbidden()
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
