"""The Create/Edit Action wizard: its editors, live preview, variable picker and Test step.

Creating and editing share one wizard. Editing starts from the masked definition, so a literal
credential shows as ``********`` and is kept by :meth:`Admin.replace_action` unless replaced.
Every button posts the whole form, so the wizard works without its script: "Add row" and
"Load into editors" re-render it, Test runs the draft, Save validates and stores it. Whatever
fails, the page comes back with the operator's input and an error naming the field; nothing is
stored. The script only adds rows in place, inserts variables and keeps the preview live
through ``POST /actions/preview``, which runs the same code as the server-rendered preview.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from gateway.admin.dashboard.case_rows import case_form, cases_of, without_cases
from gateway.admin.dashboard.editors import (
    FIELD_TYPES,
    PARAM_TYPES,
    ROW_FIELDS,
    editor_rows,
    parameters_of,
)
from gateway.admin.dashboard.forms import (
    FormData,
    definition_form,
    definition_text,
    merge_edit,
    parse_definition,
)
from gateway.admin.dashboard.pages import (
    SECURITY_HEADERS,
    AdminForm,
    AdminSession,
    Dash,
    Dashboard,
    PageTable,
    Posted,
    definition_error,
)
from gateway.admin.dashboard.request_fields import editor_field
from gateway.admin.dashboard.session import Session
from gateway.admin.dashboard.testinputs import (
    SEED_VARIABLES,
    captured_lead_fields,
    parse_test_form,
    preview,
)
from gateway.admin.dashboard.views import step_of
from gateway.admin.service import Admin, unmask
from gateway.admin.testrun import run_test_with
from gateway.definitions.config import parse_action
from gateway.errors import ConfigError, RequestError
from gateway.evaluation.action_cases import ActionCase
from gateway.evaluation.starters import starter_cases

__all__ = ["pages"]

pages = PageTable()

_KEPT_ON_LOAD = ("csrf", "dry_run", "intent")
"""Fields that are not part of the definition and survive "Load into editors"."""


def _draft(form: FormData) -> tuple[dict[str, Any] | None, str]:
    """The definition the wizard's fields describe so far, or why there is none."""
    if not form:
        return None, ""
    try:
        return parse_definition(form), ""
    except RequestError as e:
        return None, str(e)


def _whole(admin: Admin, editing: str | None, draft: dict[str, Any] | None) -> Any:
    """The draft as it would be saved: an edit's draft over the stored settings it keeps.

    The advanced view shows this, so saving it as the raw definition loses nothing stored.
    """
    if draft is None or not editing:
        return draft
    try:
        return merge_edit(admin.get_action(editing), draft)
    except RequestError:
        return draft


def _raw_text(form: FormData, whole: Any) -> str:
    """The advanced view: what was typed there when it is in use, else the editors' definition."""
    if form.get("use_raw") == "on" or whole is None:
        return form.get("definition_json", "")
    return definition_text(whole)


async def _picker(admin: Admin, view: dict[str, Any]) -> dict[str, list[str]]:
    """The variable picker's groups; secrets by name only (their values never reach a page)."""
    try:
        secrets = [s["name"] for s in await admin.list_secrets()]
    except RequestError:
        secrets = []
    return {
        "Conversation": list(SEED_VARIABLES),
        "Captured lead fields": captured_lead_fields(admin.workspace.actions.values()),
        "Arguments": [f"args.{a}" for a in view.get("arguments", [])],
        "Form fields": [f"form.{f}" for f in view.get("form_fields", [])],
        "Secrets": [f"secrets.{s}" for s in secrets],
    }


def _step(form: FormData, error: RequestError | None, result: Any, step: int | None) -> int:
    if step is not None:
        return step
    if not form:
        return 1
    if result is not None:
        return 5
    return step_of(editor_field(error.param if error else None))


async def _wizard(
    request: Request,
    dash: Dashboard,
    session: Session,
    form: FormData,
    status: int = 200,
    *,
    error: RequestError | None = None,
    result: dict[str, Any] | None = None,
    checked_agents: list[str] | None = None,
    editing: str | None = None,
    step: int | None = None,
    add: str | None = None,
    notice: str | None = None,
) -> Response:
    """The wizard, open at ``step`` (by default where the error or result is)."""
    admin = await dash.admin(request)
    draft, problem = _draft(form)
    view = preview(draft, problem)
    return dash.render(
        request,
        "action_new.html",
        session,
        status,
        form=form,
        error=error,
        error_at=editor_field(error.param if error else None),
        result=result,
        agents=admin.list_agents(),
        checked=checked_agents or [],
        step=_step(form, error, result, step),
        editing=editing,
        rows=editor_rows(form, add),
        preview=view,
        inputs=view.get("inputs", []),
        raw=_raw_text(form, _whole(admin, editing, draft)),
        picker=await _picker(admin, view),
        param_types=PARAM_TYPES,
        field_types=FIELD_TYPES,
        notice=notice,
    )


async def _wizard_test(admin: Admin, form: FormData, definition: dict[str, Any]) -> dict[str, Any]:
    """Run the wizard's Test step on the definition as it would be saved."""
    try:
        action = parse_action(definition)
    except ConfigError as e:
        raise definition_error(e) from None
    variables, args = parse_test_form(form, getattr(action, "parameters", {}))
    result = await run_test_with(
        admin.runtime, action, variables, args, dry_run=form.get("dry_run") == "on"
    )
    return result.as_json()


def _loaded(form: FormData) -> dict[str, str]:
    """The form with the advanced view's definition put into the editors."""
    data = parse_definition({**form, "use_raw": "on"})
    kept = {
        k: v
        for k, v in form.items()
        if k in _KEPT_ON_LOAD or k.startswith(("var:", "arg:", "case-"))
    }
    return kept | definition_form(data)


async def _redisplay(
    request: Request, dash: Dashboard, posted: Posted, editing: str | None, old_type: str
) -> Response | None:
    """Answer the buttons that only change the page ("Add row", "Load into editors", "Show")."""
    form, intent = posted.form, posted.form.get("intent", "")
    again: dict[str, Any] = {"checked_agents": posted.lists.get("agent", []), "editing": editing}
    kind = intent.removeprefix("add:")
    if intent.startswith("add:") and kind in ROW_FIELDS:
        step = 3 if kind.endswith("authheader") else 4 if kind == "case" else 2
        return await _wizard(request, dash, posted.session, form, step=step, add=kind, **again)
    if intent.startswith("show:") and intent[5:].isdigit():
        return await _wizard(request, dash, posted.session, form, step=int(intent[5:]), **again)
    if intent == "starter_cases":
        try:
            started = without_cases(form) | case_form(_starters(form))
        except RequestError as e:
            return await _wizard(request, dash, posted.session, form, 422, error=e, **again)
        made = sum(1 for k in started if k.startswith("case-") and k.endswith("-message"))
        notice = f"Made {made} starter cases from the guardrail: read and fix the messages."
        return await _wizard(request, dash, posted.session, started, step=4, notice=notice, **again)
    if intent == "load_raw":
        try:
            loaded = _loaded(form)
        except RequestError as e:
            return await _wizard(request, dash, posted.session, form, 422, error=e, **again)
        if editing:
            loaded["type"] = old_type
        return await _wizard(request, dash, posted.session, loaded, step=2, **again)
    return None


def _starters(form: FormData) -> list[ActionCase]:
    """Starter cases from the draft's guardrail (:mod:`gateway.evaluation.starters`)."""
    guardrail = form.get("when_not_to_use", "").strip()
    if not guardrail:
        raise RequestError(
            422,
            "When not to use: write the guardrail first; each sentence becomes a SKIP case",
            "invalid_definition",
            "when_not_to_use",
        )
    try:
        parameters = parameters_of(form)
    except RequestError:
        parameters = {}  # the arguments editor reports its own errors on save
    text = without_cases(form)
    uses_email = any("lead.email" in v for k, v in text.items() if k != "csrf")
    return starter_cases(form.get("name", ""), guardrail, parameters, uses_email=uses_email)


async def _save_cases(admin: Admin, tool_name: str, cases: list[ActionCase]) -> None:
    await admin.guardrails.put_cases(tool_name, [c.model_dump() for c in cases])


@pages.get("/actions/new")
async def new_action(request: Request, dash: Dash, session: AdminSession) -> Response:
    return await _wizard(request, dash, session, {})


@pages.post("/actions/preview")
async def preview_draft(request: Request, dash: Dash, posted: AdminForm) -> Response:
    """The live preview: the tool the model would see for the posted draft, and its inputs."""
    draft, problem = _draft(posted.form)
    whole = _whole(await dash.admin(request), posted.form.get("editing"), draft)
    body = preview(draft, problem) | {"definition": definition_text(whole) if whole else None}
    return JSONResponse(body, headers=SECURITY_HEADERS)


@pages.post("/actions/new")
async def create_action(request: Request, dash: Dash, posted: AdminForm) -> Response:
    shown = await _redisplay(request, dash, posted, None, "")
    if shown is not None:
        return shown
    session, form, agents = posted.session, posted.form, posted.lists.get("agent", [])
    admin = await dash.admin(request)
    try:
        definition = parse_definition(form)
        if form.get("intent") == "test":
            result = await _wizard_test(admin, form, definition)
            return await _wizard(request, dash, session, form, result=result, checked_agents=agents)
        cases = cases_of(form)  # checked before anything is stored
        saved = await admin.create_action(definition)
    except RequestError as e:
        return await _wizard(request, dash, session, form, 422, error=e, checked_agents=agents)
    await _save_cases(admin, saved["tool_name"], cases)
    await _enable(admin, saved["tool_name"], agents)
    return RedirectResponse(f"/actions/{saved['tool_name']}?created=1", status_code=303)


def _enabled_on(admin: Admin, tool_name: str) -> list[str]:
    return [a["id"] for a in admin.list_agents() if tool_name in a["enabled_actions"]]


async def _enable(admin: Admin, tool_name: str, agent_ids: list[str]) -> None:
    """Enable the action on exactly the agents ticked in the wizard's last step."""
    for agent in admin.list_agents():
        wanted = agent["id"] in agent_ids
        if wanted != (tool_name in agent["enabled_actions"]):
            await admin.toggle(agent["id"], tool_name, wanted)


@pages.get("/actions/{tool_name}/edit")
async def edit_action(
    tool_name: str, request: Request, dash: Dash, session: AdminSession
) -> Response:
    admin = await dash.admin(request)
    try:
        definition = admin.get_action(tool_name)
    except RequestError:
        return dash.render(request, "not_found.html", session, 404, what="Action")
    cases = await admin.guardrails.cases(tool_name)
    return await _wizard(
        request,
        dash,
        session,
        definition_form(definition) | case_form(cases),
        checked_agents=_enabled_on(admin, tool_name),
        editing=tool_name,
        step=2,
    )


async def _edited(admin: Admin, tool_name: str, form: FormData, old: dict[str, Any]) -> Any:
    """Test or save an edit; a test returns its result, a save the saved definition."""
    definition = merge_edit(old, parse_definition(form), raw=form.get("use_raw") == "on")
    if form.get("intent") == "test":
        # Test what would be saved: stored credentials stand in for the masks.
        current = admin.workspace.actions[tool_name]
        stored = current.model_dump(mode="json", by_alias=True, exclude_none=True)
        return await _wizard_test(admin, form, unmask(definition, stored))
    cases = cases_of(form)  # checked before anything is stored
    saved = await admin.replace_action(tool_name, definition)
    await _save_cases(admin, saved["tool_name"], cases)
    return saved


@pages.post("/actions/{tool_name}/edit")
async def save_action(tool_name: str, request: Request, dash: Dash, posted: AdminForm) -> Response:
    session, agents = posted.session, posted.lists.get("agent", [])
    admin = await dash.admin(request)
    try:
        old = admin.get_action(tool_name)
    except RequestError:
        return dash.render(request, "not_found.html", session, 404, what="Action")
    # The type is fixed while editing: the page shows it read-only and ignores a posted one.
    form = {**posted.form, "type": str(old.get("type", "http"))}
    posted = Posted(session, form, posted.lists)
    shown = await _redisplay(request, dash, posted, tool_name, form["type"])
    if shown is not None:
        return shown
    again: dict[str, Any] = {"checked_agents": agents, "editing": tool_name}
    try:
        outcome = await _edited(admin, tool_name, form, old)
    except RequestError as e:
        return await _wizard(request, dash, session, form, 422, error=e, **again)
    if form.get("intent") == "test":
        return await _wizard(request, dash, session, form, result=outcome, **again)
    await _enable(admin, outcome["tool_name"], agents)
    return RedirectResponse(f"/actions/{outcome['tool_name']}?saved=1", status_code=303)
