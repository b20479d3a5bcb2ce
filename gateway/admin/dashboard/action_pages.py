"""The Custom Actions pages: the list, the Create/Edit Action wizard, an action's page and Test.

Creating and editing share one wizard. Editing starts from the masked definition, so a literal
credential shows as ``********`` and is kept by :meth:`Admin.replace_action` unless replaced.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.dashboard.forms import (
    FormData,
    definition_form,
    merge_edit,
    parse_args,
    parse_definition,
    parse_variables,
)
from gateway.admin.dashboard.pages import (
    AdminForm,
    AdminSession,
    Dash,
    Dashboard,
    PageTable,
    definition_error,
)
from gateway.admin.dashboard.session import Session
from gateway.admin.dashboard.views import health_badge, health_rows, step_of
from gateway.admin.service import Admin, unmask
from gateway.admin.testrun import run_test_with
from gateway.definitions.config import parse_action
from gateway.errors import ConfigError, RequestError

__all__ = ["pages"]

pages = PageTable()


def _enabled_on(admin: Admin, tool_name: str) -> list[str]:
    return [a["id"] for a in admin.list_agents() if tool_name in a["enabled_actions"]]


async def _enable(admin: Admin, tool_name: str, agent_ids: list[str]) -> None:
    """Enable the action on exactly the agents ticked in the wizard's last step."""
    for agent in admin.list_agents():
        wanted = agent["id"] in agent_ids
        if wanted != (tool_name in agent["enabled_actions"]):
            await admin.toggle(agent["id"], tool_name, wanted)


async def _wizard_test(admin: Admin, form: FormData, definition: dict[str, Any]) -> dict[str, Any]:
    """Run the wizard's Test step on the definition as it would be saved."""
    try:
        action = parse_action(definition)
    except ConfigError as e:
        raise definition_error(e) from None
    result = await run_test_with(
        admin.runtime,
        action,
        parse_variables(form),
        parse_args(form),
        dry_run=form.get("dry_run") == "on",
    )
    return result.as_json()


async def _wizard(
    request: Request,
    dash: Dashboard,
    session: Session,
    form: FormData,
    status: int = 200,
    error: RequestError | None = None,
    result: dict[str, Any] | None = None,
    checked_agents: list[str] | None = None,
    editing: str | None = None,
    step: int | None = None,
) -> Response:
    """The Create/Edit Action wizard, open at ``step`` (by default where the error or result is)."""
    admin = await dash.admin(request)
    if step is None and not form:
        step = 1
    elif step is None:
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
        checked=checked_agents or [],
        step=step,
        editing=editing,
    )


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
    )


@pages.get("/actions")
async def actions(request: Request, dash: Dash, session: AdminSession) -> Response:
    admin = await dash.admin(request)
    definitions = admin.list_actions()
    overview = await admin.health_overview()
    health = {a["tool_name"]: health_badge(a, overview.get(a["tool_name"])) for a in definitions}
    return dash.render(request, "actions.html", session, actions=definitions, health=health)


@pages.get("/actions/new")
async def new_action(request: Request, dash: Dash, session: AdminSession) -> Response:
    return await _wizard(request, dash, session, {})


@pages.post("/actions/new")
async def create_action(request: Request, dash: Dash, posted: AdminForm) -> Response:
    session, form, lists = posted.session, posted.form, posted.lists
    admin = await dash.admin(request)
    agents = lists.get("agent", [])
    try:
        definition = parse_definition(form)
        if form.get("intent") == "test":
            result = await _wizard_test(admin, form, definition)
            return await _wizard(request, dash, session, form, result=result, checked_agents=agents)
        saved = await admin.create_action(definition)
    except RequestError as e:
        return await _wizard(request, dash, session, form, 422, error=e, checked_agents=agents)
    await _enable(admin, saved["tool_name"], agents)
    return RedirectResponse(f"/actions/{saved['tool_name']}?created=1", status_code=303)


@pages.get("/actions/{tool_name}/edit")
async def edit_action(
    tool_name: str, request: Request, dash: Dash, session: AdminSession
) -> Response:
    admin = await dash.admin(request)
    try:
        definition = admin.get_action(tool_name)
    except RequestError:
        return dash.render(request, "not_found.html", session, 404, what="Action")
    return await _wizard(
        request,
        dash,
        session,
        definition_form(definition),
        checked_agents=_enabled_on(admin, tool_name),
        editing=tool_name,
        step=2,
    )


@pages.post("/actions/{tool_name}/edit")
async def save_action(tool_name: str, request: Request, dash: Dash, posted: AdminForm) -> Response:
    session, form, lists = posted.session, posted.form, posted.lists
    admin = await dash.admin(request)
    try:
        old = admin.get_action(tool_name)
    except RequestError:
        return dash.render(request, "not_found.html", session, 404, what="Action")
    # The type is fixed while editing: the page shows it read-only and ignores a posted one.
    form = {**form, "type": str(old.get("type", "http"))}
    agents = lists.get("agent", [])
    try:
        definition = merge_edit(old, parse_definition(form))
        if form.get("intent") == "test":
            # Test what would be saved: stored credentials stand in for the masks.
            current = admin.workspace.actions[tool_name]
            stored = current.model_dump(mode="json", by_alias=True, exclude_none=True)
            result = await _wizard_test(admin, form, unmask(definition, stored))
            return await _wizard(
                request,
                dash,
                session,
                form,
                result=result,
                checked_agents=agents,
                editing=tool_name,
            )
        saved = await admin.replace_action(tool_name, definition)
    except RequestError as e:
        return await _wizard(
            request, dash, session, form, 422, error=e, checked_agents=agents, editing=tool_name
        )
    await _enable(admin, saved["tool_name"], agents)
    return RedirectResponse(f"/actions/{saved['tool_name']}?saved=1", status_code=303)


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
        variables, args = parse_variables(form), parse_args(form)
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
