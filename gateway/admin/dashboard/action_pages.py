"""The Custom Actions pages: the list, an action's page (its summary, health and Test panel).

The page shows the masked definition as a summary an operator reads (method, URL with its
variables marked, headers, arguments, trimming, guardrail, the tool the model sees), with the
raw JSON kept under "Advanced". The Test panel has one input per variable and argument
(:mod:`.testinputs`); the page script remembers the last values per action in the browser's
``localStorage``, never on the server, so customer data typed into a test is not stored.
The Create/Edit wizard is :mod:`.wizard_pages`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.dashboard.forms import FormData
from gateway.admin.dashboard.pages import AdminForm, AdminSession, Dash, Dashboard, PageTable
from gateway.admin.dashboard.session import Session
from gateway.admin.dashboard.testinputs import parse_test_form, tool_view
from gateway.admin.dashboard.views import health_badge, health_rows
from gateway.errors import RequestError

__all__ = ["pages"]

pages = PageTable()


async def _action_page(
    request: Request,
    dash: Dashboard,
    session: Session,
    tool_name: str,
    form: FormData | None = None,
    result: dict[str, Any] | None = None,
    error: RequestError | None = None,
) -> Response:
    """An action's page: its definition, health checks and the Test panel (with a result)."""
    admin = await dash.admin(request)
    try:
        definition = admin.get_action(tool_name)
    except RequestError:
        return dash.render(request, "not_found.html", session, 404, what="Action")
    health = await admin.action_health(tool_name)
    overview = await admin.health_overview()
    params = request.query_params
    tool = tool_view(admin.workspace.actions[tool_name])
    return dash.render(
        request,
        "action.html",
        session,
        422 if error else 200,
        action=definition,
        form=form or {},
        result=result,
        error=error,
        created=params.get("created") == "1",
        saved=params.get("saved") == "1",
        checked=params.get("checked") == "1",
        health=health_badge(definition, overview.get(tool_name)),
        health_latest=health_rows([health["latest"]] if health["latest"] else []),
        health_history=health_rows(health["history"]),
        tab="test",
        tool=tool,
        inputs=tool["inputs"],
    )


@pages.get("/actions")
async def actions(request: Request, dash: Dash, session: AdminSession) -> Response:
    admin = await dash.admin(request)
    definitions = admin.list_actions()
    overview = await admin.health_overview()
    health = {a["tool_name"]: health_badge(a, overview.get(a["tool_name"])) for a in definitions}
    return dash.render(request, "actions.html", session, actions=definitions, health=health)


@pages.get("/actions/{tool_name}")
async def show_action(
    tool_name: str, request: Request, dash: Dash, session: AdminSession
) -> Response:
    return await _action_page(request, dash, session, tool_name)


@pages.post("/actions/{tool_name}/test")
async def test_action(tool_name: str, request: Request, dash: Dash, posted: AdminForm) -> Response:
    session, form = posted.session, posted.form
    admin = await dash.admin(request)
    dry_run = form.get("dry_run") == "on"
    try:
        action = admin.workspace.actions.get(tool_name)
        variables, args = parse_test_form(form, getattr(action, "parameters", {}))
        result = (await admin.test_action(tool_name, variables, args, dry_run)).as_json()
    except RequestError as e:
        return await _action_page(request, dash, session, tool_name, form, error=e)
    method = getattr(admin.workspace.actions.get(tool_name), "method", "GET")
    if not dry_run and method != "GET":
        result["warning"] = f"{method} ran for real: it may have changed real data"
    return await _action_page(request, dash, session, tool_name, form, result=result)


@pages.post("/actions/{tool_name}/health/run")
async def run_health_check(
    tool_name: str, request: Request, dash: Dash, posted: AdminForm
) -> Response:
    admin = await dash.admin(request)
    try:
        await admin.run_health_check(tool_name)
    except RequestError as e:
        if e.status == 404:
            return dash.render(request, "not_found.html", posted.session, 404, what="Action")
        return await _action_page(request, dash, posted.session, tool_name, error=e)
    return RedirectResponse(f"/actions/{tool_name}?checked=1#health-h", status_code=303)


@pages.post("/actions/{tool_name}/delete")
async def delete_action(
    tool_name: str, request: Request, dash: Dash, posted: AdminForm
) -> Response:
    admin = await dash.admin(request)
    await admin.delete_action(tool_name)
    return RedirectResponse("/actions", status_code=303)
