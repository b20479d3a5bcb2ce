"""The Agents pages: each agent's actions, switched on and off (the Playground: playground.py)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.dashboard.pages import AdminForm, AdminSession, Dash, PageTable
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
async def save_agent_actions(
    agent_id: str, request: Request, dash: Dash, posted: AdminForm
) -> Response:
    admin = await dash.admin(request)
    wanted = set(posted.lists.get("action", []))
    current = set(admin.get_agent(agent_id)["enabled_actions"])
    for tool in sorted(admin.workspace.actions):
        if (tool in wanted) != (tool in current):
            await admin.toggle(agent_id, tool, tool in wanted)
    return RedirectResponse(f"/agents/{agent_id}?saved=1", status_code=303)
