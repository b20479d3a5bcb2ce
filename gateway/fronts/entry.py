"""What every front does before and after the tool loop: the key, the browser rules, the turn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.engine.workspace import Workspace
from gateway.errors import RequestError
from gateway.net.browser import cross_origin_of
from gateway.proxy.loop import BrowserClient, Proxy
from gateway.proxy.turns import Turn

__all__ = ["Backend", "event_stream", "open_turn", "refuse_unknown_key"]


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
    return await backend.proxy.prepare(body, headers, key, browser)


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
