"""An action's Guardrail check tab: its cases, and a run of them against an agent's model.

The cases are edited as rows (:mod:`.case_rows`) and saved together; "Run check" scores the
saved cases with the code ``actiongate eval`` runs (:class:`~gateway.admin.guardrail_checks.
GuardrailChecks`) on the chosen agent's real upstream, so the table shows exactly the numbers
the command prints for the downloaded suite. A run sends no request to any action API.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.dashboard.case_rows import case_form, case_rows, cases_of
from gateway.admin.dashboard.editors import editor_rows, filled_rows, rows_form
from gateway.admin.dashboard.forms import FormData
from gateway.admin.dashboard.pages import (
    SECURITY_HEADERS,
    AdminForm,
    AdminSession,
    Dash,
    Dashboard,
    PageTable,
    Posted,
)
from gateway.admin.dashboard.session import Session
from gateway.errors import RequestError, UpstreamError
from gateway.evaluation.action_cases import MAX_RUNS
from gateway.evaluation.report import failing_cases, percent
from gateway.evaluation.run import EvalReport

__all__ = ["pages"]

pages = PageTable()


def _report_view(report: EvalReport) -> dict[str, Any]:
    rows = [
        {
            "action": tool,
            "correct_calls": s.correct_calls,
            "false_triggers": s.false_triggers,
            "missed": s.missed,
            "precision": percent(s.precision),
            "recall": percent(s.recall),
            "false_trigger_rate": percent(s.false_trigger_rate),
            "argument_mismatches": s.argument_mismatches,
        }
        for tool, s in report.actions.items()
    ]
    cases = len({v.case for v in report.verdicts})
    answers = [
        {
            "case": v.case,
            "run": v.run + 1,
            "outcome": " / ".join(o.replace("_", " ") for o in v.outcomes.values()),
            "called": ", ".join(v.called) or "nothing",
            "mismatches": ", ".join(a for names in v.mismatches.values() for a in names),
        }
        for v in report.verdicts
    ]
    return {
        "rows": rows,
        "failing": failing_cases(report),
        "runs": report.runs,
        "cases": cases,
        "answers": answers,
    }


async def _page(
    request: Request,
    dash: Dashboard,
    session: Session,
    tool_name: str,
    *,
    form: FormData | None = None,
    add: str | None = None,
    error: RequestError | None = None,
    run_error: str | None = None,
    report: EvalReport | None = None,
    run: FormData | None = None,
    notice: str | None = None,
) -> Response:
    admin = await dash.admin(request)
    try:
        action = admin.get_action(tool_name)
        stored = await admin.guardrails.cases(tool_name)
    except RequestError:
        return dash.render(request, "not_found.html", session, 404, what="Action")
    shown = form if form is not None else case_form(stored)
    return dash.render(
        request,
        "guardrails.html",
        session,
        422 if error or run_error else 200,
        action=action,
        tab="guardrails",
        rows=editor_rows(shown, add),
        stored=len(stored),
        agents=admin.guardrails.agents_of(tool_name),
        run=run or {},
        max_runs=MAX_RUNS,
        error=error,
        run_error=run_error,
        report=_report_view(report) if report is not None else None,
        saved=request.query_params.get("saved") == "1",
        notice=notice,
    )


@pages.get("/actions/{tool_name}/guardrails")
async def guardrails(
    tool_name: str, request: Request, dash: Dash, session: AdminSession
) -> Response:
    return await _page(request, dash, session, tool_name)


@pages.post("/actions/{tool_name}/guardrails")
async def save_cases(tool_name: str, request: Request, dash: Dash, posted: AdminForm) -> Response:
    """ "Add case" shows one more row; "Save cases" stores the rows (nothing on an error)."""
    form = posted.form
    if form.get("intent") == "add:case":
        return await _page(request, dash, posted.session, tool_name, form=form, add="case")
    admin = await dash.admin(request)
    if form.get("intent") == "starter_cases":
        return await _with_starters(request, dash, posted, tool_name)
    try:
        cases = cases_of(form)
        await admin.guardrails.put_cases(tool_name, [c.model_dump() for c in cases])
    except RequestError as e:
        if e.status == 404:
            return dash.render(request, "not_found.html", posted.session, 404, what="Action")
        return await _page(request, dash, posted.session, tool_name, form=form, error=e)
    return RedirectResponse(f"/actions/{tool_name}/guardrails?saved=1", status_code=303)


async def _with_starters(
    request: Request, dash: Dashboard, posted: Posted, tool_name: str
) -> Response:
    """The rows as posted, then starter cases from the guardrail (shown, not saved yet)."""
    admin = await dash.admin(request)
    form = posted.form
    try:
        made = admin.guardrails.starters(tool_name)
    except RequestError as e:
        if e.status == 404:
            return dash.render(request, "not_found.html", posted.session, 404, what="Action")
        return await _page(request, dash, posted.session, tool_name, form=form, error=e)
    kept = [r for r in filled_rows(form, "case") if r.get("delete") != "on"]
    rows = kept + case_rows(made)
    notice = f"Added {len(made)} starter cases: read and fix the messages, then save."
    shown = {"csrf": form.get("csrf", ""), **rows_form("case", rows)}
    return await _page(request, dash, posted.session, tool_name, form=shown, notice=notice)


def _runs(text: str) -> int | str:
    """The runs field as a number (the check refuses one out of range, naming it)."""
    return int(text) if text.strip().isdigit() else text


@pages.post("/actions/{tool_name}/guardrails/run")
async def run_check(tool_name: str, request: Request, dash: Dash, posted: AdminForm) -> Response:
    """Run the saved cases on the chosen agent and show the report."""
    form = posted.form
    admin = await dash.admin(request)
    try:
        report = await admin.guardrails.run(
            tool_name, form.get("agent"), _runs(form.get("runs", "1"))
        )
    except (RequestError, UpstreamError) as e:
        return await _page(request, dash, posted.session, tool_name, run=form, run_error=str(e))
    return await _page(request, dash, posted.session, tool_name, run=form, report=report)


@pages.get("/actions/{tool_name}/guardrails/suite.yaml")
async def download_suite(
    tool_name: str, request: Request, dash: Dash, session: AdminSession
) -> Response:
    """The saved cases as a suite file for ``actiongate eval``."""
    admin = await dash.admin(request)
    agent = request.query_params.get("agent") or None
    try:
        text = await admin.guardrails.suite_yaml(tool_name, agent)
    except RequestError as e:
        if e.status == 404:
            return dash.render(request, "not_found.html", session, 404, what="Action")
        return Response(f"{e}\n", status_code=e.status, media_type="text/plain")
    headers = SECURITY_HEADERS | {
        "Content-Disposition": f'attachment; filename="{tool_name}.eval.yaml"'
    }
    return Response(text, media_type="application/yaml", headers=headers)
