"""The Agents pages (each agent's actions, switched on and off) and the Playground.

The Playground page only picks the agent; its script chats through ``/v1/chat/completions`` as
a client would, with the client key the operator types when the agent needs one.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.dashboard.pages import (
    AdminSession,
    Dash,
    PageTable,
    checked,
    forbidden,
    read_form_lists,
)
from gateway.errors import RequestError

__all__ = ["pages"]

pages = PageTable()


@pages.get("/agents")
async def agents(request: Request, dash: Dash, session: AdminSession) -> Response:
    admin = await dash.admin(request)
    return dash.render(request, "agents.html", session, agents=admin.list_agents())


@pages.get("/agents/{agent_id}")
async def agent(agent_id: str, request: Request, dash: Dash, session: AdminSession) -> Response:
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


@pages.post("/agents/{agent_id}/actions")
async def save_agent_actions(agent_id: str, request: Request, dash: Dash) -> Response:
    session = dash.session(request)
    form, lists = await read_form_lists(request)
    if not checked(session, form):
        return forbidden()
    admin = await dash.admin(request)
    wanted = set(lists.get("action", []))
    current = set(admin.get_agent(agent_id)["enabled_actions"])
    for tool in sorted(admin.workspace.actions):
        if (tool in wanted) != (tool in current):
            await admin.toggle(agent_id, tool, tool in wanted)
    return RedirectResponse(f"/agents/{agent_id}?saved=1", status_code=303)


@pages.get("/playground")
async def playground(request: Request, dash: Dash, session: AdminSession) -> Response:
    admin = await dash.admin(request)
    agents = admin.list_agents()
    # By default, the first agent the playground can call without a client key.
    open_ids = [a["id"] for a in agents if (v := admin.workspace.view(a["id"])) and v.accepts(None)]
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
