"""The Playground: the signed-in admin chats with any agent, on the admin session.

The page's script posts each turn to ``POST /playground/chat`` on the dashboard itself, which
runs it through the proxy's own logic (:class:`~gateway.proxy.loop.Proxy`) for the chosen agent.
The admin is trusted, so an agent's client keys are not asked for: they never reach the
browser, and the proxy fronts keep accepting client keys only (no cookie ever authenticates
``/v1``). The endpoint needs the admin session (a ``SameSite=Strict`` cookie) and the session's
CSRF token in ``X-CSRF-Token`` (a header no other site can set without a preflight), both
checked before the body is read, so no other site can make a browser chat through it.

Only ``agent``, ``messages`` and ``conversation`` (id, lead fields, user id, channel) are taken
from the page; the rest of the request is the proxy's as for any client.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import orjson
from fastapi import Request
from fastapi.responses import Response

from gateway.admin.dashboard.pages import AdminSession, Dash, PageTable
from gateway.admin.dashboard.session import csrf_matches
from gateway.engine.workspace import AgentView, Workspace
from gateway.errors import RequestError
from gateway.net.inbound import conversation_header, read_json_body
from gateway.proxy.loop import Proxy

__all__ = ["CSRF_HEADER", "admin_proxy", "chat_body", "pages"]

CSRF_HEADER = "x-csrf-token"
_FIELDS = frozenset({"agent", "messages", "conversation"})

pages = PageTable()


class _AdminViews:
    """The live agents as the signed-in admin may use them: without their client keys.

    Offers only :meth:`view`, all :func:`~gateway.proxy.turns.prepare_turn` reads of a
    workspace; everything else (definitions, caches) stays the live workspace's.
    """

    def __init__(self, live: Workspace) -> None:
        self._live = live

    def view(self, agent_id: str) -> AgentView | None:
        view = self._live.view(agent_id)
        if view is None or not view.config.api_keys:
            return view
        return replace(view, config=view.config.model_copy(update={"api_keys": []}))


def admin_proxy(live: Proxy) -> Proxy:
    """The live proxy (same executor, upstream and conversations), for the trusted admin."""
    views = cast(Workspace, _AdminViews(live.workspace))
    return Proxy(views, live.executor, live.upstream, live.states)


def _fail(message: str, param: str | None = None) -> RequestError:
    return RequestError(400, message, "invalid_request", param)


def chat_body(body: Any) -> dict[str, Any]:
    """The chat request for the proxy from what the Playground posted.

    Raises:
        RequestError: 400 naming the field that is missing, of the wrong type or not accepted.
    """
    if not isinstance(body, dict):
        raise _fail("the request body must be a JSON object")
    for name in sorted(body.keys() - _FIELDS):
        raise _fail(f"field {name!r} is not accepted by the Playground", str(name)[:64])
    agent = body.get("agent")
    if not isinstance(agent, str) or not agent:
        raise _fail("agent: expected an agent id", "agent")
    chat: dict[str, Any] = {"model": agent, "messages": body.get("messages"), "stream": False}
    if body.get("conversation") is not None:
        chat["conversation"] = body["conversation"]
    return chat


async def _admin_request(request: Request, dash: Dash) -> None:
    """Refuse a chat without the admin session and its CSRF header, before reading the body."""
    session = dash.session(request)
    if session is None or not session.admin:
        raise RequestError(
            401, "log in to the dashboard first", "unauthorized", kind="authentication_error"
        )
    if not csrf_matches(session, request.headers.get(CSRF_HEADER)):
        raise RequestError(
            403, "missing or invalid X-CSRF-Token header", "csrf_failed", kind="permission_error"
        )
    media = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise RequestError(415, "the body must be application/json", "unsupported_media_type")


@pages.get("/playground")
async def playground(request: Request, dash: Dash, session: AdminSession) -> Response:
    admin = await dash.admin(request)
    agents = admin.list_agents()
    chosen = request.query_params.get("agent") or next(iter(a["id"] for a in agents), "")
    known = admin.workspace.view(chosen) is not None
    return dash.render(
        request, "playground.html", session, agents=agents, agent=chosen if known else ""
    )


@pages.post("/playground/chat")
async def playground_chat(request: Request, dash: Dash) -> Response:
    await _admin_request(request, dash)
    chat = chat_body(await read_json_body(request))
    await dash.admin(request)  # definitions another replica changed, as on every page
    proxy = admin_proxy(dash.backend_of(request).proxy)
    turn = await proxy.prepare(chat, {}, None)
    completion = await proxy.complete(turn)
    headers = {"Cache-Control": "no-store", **conversation_header(turn.conversation.id)}
    return Response(orjson.dumps(completion), media_type="application/json", headers=headers)
