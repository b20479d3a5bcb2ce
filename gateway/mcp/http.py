"""MCP over streamable HTTP at ``/mcp/{agent_id}`` on the ``serve`` port.

The agent is the last path segment; the client key goes in ``Authorization: Bearer <key>`` and
is checked with :meth:`AgentView.accepts`, as for ``/v1/chat/completions`` (an agent without
``api_keys`` is open). A missing or wrong key is a 401 and an unknown agent a 404, both before
the MCP layer sees the request. Every request is authorised again, so a key removed by the admin
API stops working at once; a session is bound to the agent and key that opened it (another
credential presenting its id gets the SDK's 404).

Bodies: the key is checked before anything is read, then the body is read here, capped at
:data:`~gateway.net.inbound.MAX_REQUEST_BYTES` (a 413 past it, a declared ``Content-Length``
over it refused unread), because the SDK itself reads a body whole.

Conversations: a handshake-era client (protocol up to 2025-11-25) gets an ``Mcp-Session-Id`` and
one conversation per session, held under the agent and the session together (a conversation
belongs to its agent); a 2026-07-28 client is stateless by design, so each of its requests is a
conversation of its own. Tools and calls are those of :mod:`gateway.mcp.server`.

Mounting (the lifespan must enter :meth:`McpHttp.run`, which owns the SDK's session manager)::

    mcp = McpHttp(lambda: app.state.services)
    app.mount("/mcp", mcp)
    # in the lifespan, once services exist:  async with mcp.run(): yield
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.engine.context import Conversation
from gateway.engine.runtime import Runtime
from gateway.engine.workspace import AgentView, Workspace
from gateway.errors import RequestError
from gateway.mcp.server import CHANNEL, Caller, build_server
from gateway.net.browser import cross_origin_of
from gateway.net.inbound import MAX_REQUEST_BYTES, bearer_token, read_body_bytes, replay_receive

__all__ = ["MAX_SESSIONS", "McpBackend", "McpHttp"]

MAX_SESSIONS = 10_000
"""Open handshake-era sessions (and their conversations) kept at once."""
_AGENT_KEY = "actiongate.mcp.agent"
"""ASGI scope key carrying the authorised :class:`AgentView` to the tool handlers."""


class McpBackend(Protocol):
    """What the MCP endpoint needs from the running gateway (``app.state.services`` fits)."""

    @property
    def workspace(self) -> Workspace: ...

    @property
    def runtime(self) -> Runtime: ...


class McpHttp:
    """The ASGI app to mount at ``/mcp``; :meth:`run` must be entered in the app's lifespan."""

    def __init__(
        self,
        backend: Callable[[], McpBackend],
        *,
        security: TransportSecuritySettings | None = None,
    ) -> None:
        """Create the endpoint.

        Args:
            backend: Returns the running gateway's parts; called per request, after start-up.
            security: The SDK's Host/Origin checks against DNS rebinding (off by default: the
                client key guards the endpoint and the public host is not known here).
        """
        self._backend = backend
        self._security = security
        self._server = build_server(self._caller)
        self._manager: StreamableHTTPSessionManager | None = None
        self._conversations: OrderedDict[tuple[str, str], Conversation] = OrderedDict()

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Serve MCP sessions until the context exits; then close them all.

        A fresh session manager each time, so one app can be started more than once.
        """
        manager = StreamableHTTPSessionManager(
            self._server, security_settings=self._security, max_sessions=MAX_SESSIONS
        )
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None
                self._conversations.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        manager = self._manager
        agent_id = _agent_id(scope)
        if manager is None:
            response = _error(503, "the MCP endpoint is not running")
        elif agent_id is None:
            response = _error(404, "use /mcp/{agent_id}")
        elif (agent := self._backend().workspace.view(agent_id)) is None:
            response = _error(404, f"unknown agent {agent_id[:64]!r}")
        elif not agent.accepts(
            key := bearer_token(Headers(scope=scope).get("authorization")),
            cross.origin if (cross := cross_origin_of(scope)) else None,
        ):
            response = _error(401, f"invalid or missing client key for agent {agent_id!r}")
            response.headers["WWW-Authenticate"] = 'Bearer realm="actiongate"'
        else:
            try:
                body = await read_body_bytes(Request(scope, receive), MAX_REQUEST_BYTES)
            except ClientDisconnect:
                return  # nobody to answer
            except RequestError as e:
                response = _error(e.status, str(e))
            else:
                # The SDK binds a session to the principal that opened it: agent and this key.
                subject = hashlib.sha256(key.encode()).hexdigest() if key else None
                token = AccessToken(
                    token="", client_id=f"agent:{agent_id}", scopes=[], subject=subject
                )
                scope = {**scope, "user": AuthenticatedUser(token), _AGENT_KEY: agent}
                await manager.handle_request(scope, replay_receive(body, receive), send)
                return
        await response(scope, receive, send)

    def _caller(self, ctx: ServerRequestContext[Any]) -> Caller:
        request = ctx.request
        if not isinstance(request, Request) or _AGENT_KEY not in request.scope:
            raise RuntimeError("an MCP request reached the tools without passing McpHttp")
        agent: AgentView = request.scope[_AGENT_KEY]
        session = request.headers.get(MCP_SESSION_ID_HEADER)
        conversation = self._conversation(agent.config.id, session)
        return Caller(agent, conversation, self._backend().runtime.executor)

    def _conversation(self, agent_id: str, session: str | None) -> Conversation:
        """One conversation per session of an agent (least recently used dropped past the cap).

        Keyed by the agent too, so a session id presented at another agent's endpoint can never
        reach this conversation, whatever the SDK's own session check does.
        """
        if session is None:
            return Conversation(agent_id=agent_id, channel=CHANNEL)
        conversation = self._conversations.pop((agent_id, session), None)
        if conversation is None:
            # The id is the gateway's own, so session ids (bearer-like) never reach the log.
            conversation = Conversation(agent_id=agent_id, channel=CHANNEL)
        self._conversations[(agent_id, session)] = conversation
        while len(self._conversations) > MAX_SESSIONS:
            self._conversations.popitem(last=False)
        return conversation


def _agent_id(scope: Scope) -> str | None:
    """The one path segment after the mount point, or None."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    segments = path.strip("/").split("/")
    return segments[0] if len(segments) == 1 and segments[0] else None


def _error(status: int, message: str) -> Response:
    """A JSON-RPC error without a request id, as the SDK answers transport-level failures."""
    body = JSONRPCError(
        jsonrpc="2.0", id=None, error=ErrorData(code=INVALID_REQUEST, message=message)
    )
    return Response(
        body.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=status,
        media_type="application/json",
    )
