"""What every front does before and after the tool loop: the key, the browser rules, the turn."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.engine.workspace import Workspace
from gateway.errors import RequestError
from gateway.net.browser import cross_origin_of
from gateway.net.inbound import conversation_header
from gateway.proxy.loop import BrowserClient, Proxy
from gateway.proxy.turns import Turn
from gateway.telemetry.middleware import observed_of

__all__ = [
    "Backend",
    "client_calls",
    "event_stream",
    "open_turn",
    "refuse_unknown_key",
    "summary_headers",
]

EXECUTIONS_HEADER = "x-actiongate-executions"
_MAX_SUMMARISED = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Backend(Protocol):
    """What a front needs of the running app (``gateway.app.Services`` has it)."""

    @property
    def proxy(self) -> Proxy: ...

    @property
    def workspace(self) -> Workspace: ...


def refuse_unknown_key(backend: Backend, request: Request, key: str | None) -> None:
    """401 for a key no agent accepts, before a byte of the body is read.

    The agent is named in the body, so the key is checked against every agent first; the agent's
    own check follows in :meth:`Proxy.prepare`.
    """
    cross = cross_origin_of(request.scope)
    if not backend.workspace.accepts_anywhere(key, cross.origin if cross else None):
        raise RequestError(
            401, "invalid client key for this agent", "invalid_api_key", kind="authentication_error"
        )


async def open_turn(
    backend: Backend, request: Request, body: Any, headers: dict[str, str], key: str | None
) -> Turn:
    """Prepare the turn for a Chat-Completions-shaped ``body`` (a front's translation)."""
    cross = cross_origin_of(request.scope)
    browser = None
    if cross is not None:
        browser = BrowserClient(cross, request.client.host if request.client else "")
    observed = observed_of(request.scope)
    if observed is not None and isinstance(body, dict):
        observed.agent = str(body.get("model"))  # a label only if it names an agent
    turn = await backend.proxy.prepare(body, headers, key, browser)
    if observed is not None:
        observed.conversation_id, observed.turn = turn.conversation.id, turn
    return turn


def client_calls(turn: Turn) -> list[dict[str, Any]]:
    """The final message's calls the client must answer: its own tools and the widgets.

    Calls the gateway ran itself in the same round are left out: a client of another dialect
    could not run them, and their results are in ``actiongate.executions``.
    """
    pending = turn.state.get("pending") or {}
    return [
        call
        for call in turn.final[0].get("tool_calls") or []
        if call.get("id") in pending
        or (call.get("function") or {}).get("name") in turn.client_tools
    ]


def summary_headers(turn: Turn, *, final: bool = True) -> dict[str, str]:
    """``x-actiongate-conversation-id`` and, once the turn ran, ``x-actiongate-executions``.

    The summary is ``action=outcome`` per execution, comma-separated (at most 16, then
    ``+N``). A refused call may carry any name the model made up, so characters other than
    letters, digits, ``_``, ``-`` and ``.`` become ``?``: the value is always a valid header.
    A stream's headers leave before its turn ends, so it has only the id.
    """
    headers = conversation_header(turn.conversation.id)
    if final and turn.executions:
        parts = [f"{_UNSAFE.sub('?', e.record.action)}={e.record.outcome}" for e in turn.executions]
        if len(parts) > _MAX_SUMMARISED:
            parts = [*parts[:_MAX_SUMMARISED], f"+{len(parts) - _MAX_SUMMARISED}"]
        headers[EXECUTIONS_HEADER] = ", ".join(parts)
    return headers


async def event_stream(events: AsyncIterator[bytes], headers: dict[str, str]) -> Response:
    """A streamed answer whose first event is awaited first.

    An upstream failing at once is still a plain HTTP error (raised here), not a broken stream.
    """
    first = await events.__anext__()

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for event in events:
            yield event

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
    )
