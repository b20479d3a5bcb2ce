"""The ASGI middleware that gives every request an id and observes every client request.

Around every route: the request id (:mod:`.logs`) is set for the request and sent back as
``x-request-id``. Around the client fronts (``POST`` to a path in ``fronts``) also: the server
span continuing the client's ``traceparent``, the request metrics and the access log line. A
front reports what only it knows — agent, conversation, the time it waited for the upstream and
actions — through the :class:`Observed` it finds in the scope (:func:`observed_of`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.telemetry import metrics, tracing
from gateway.telemetry.logs import REQUEST_ID, request_id_of

__all__ = ["OBSERVED_SCOPE_KEY", "Observed", "TelemetryMiddleware", "observed_of"]

OBSERVED_SCOPE_KEY = "actiongate.observed"
_TRACE_HEADERS = (b"traceparent", b"tracestate")
access_log = logging.getLogger("actiongate.access")


@dataclass(slots=True)
class Observed:
    """What a front tells the middleware about its request."""

    agent: str | None = None
    conversation_id: str | None = None
    turn: Any = None
    """The proxy's turn, read at the end for ``waited_s`` (upstream and action time)."""


def observed_of(scope: Scope) -> Observed | None:
    """The request's :class:`Observed`, on a front's route."""
    value = scope.get(OBSERVED_SCOPE_KEY)
    return value if isinstance(value, Observed) else None


class TelemetryMiddleware:
    """Request ids everywhere; spans, metrics and access lines on the fronts."""

    def __init__(self, app: ASGIApp, fronts: Mapping[str, str]) -> None:
        self.app = app
        self.fronts = dict(fronts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client_id: bytes | None = None
        trace_headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                client_id = value
            elif name in _TRACE_HEADERS:
                trace_headers[name.decode()] = value.decode("latin-1")
        request_id = request_id_of(client_id)
        token = REQUEST_ID.set(request_id)
        status = [500]
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            front = self.fronts.get(scope["path"]) if scope["method"] == "POST" else None
            if front is None:
                await self.app(scope, receive, send_with_id)
            else:
                await self._observe(front, scope, receive, send_with_id, trace_headers, status)
        finally:
            REQUEST_ID.reset(token)

    async def _observe(
        self,
        front: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        trace_headers: dict[str, str],
        status: list[int],
    ) -> None:
        observed = scope[OBSERVED_SCOPE_KEY] = Observed()
        path = scope["path"]
        attributes = {"http.request.method": "POST", "url.path": path, "actiongate.front": front}
        started = time.perf_counter()
        with tracing.request_span(f"POST {path}", trace_headers, attributes) as span:
            try:
                await self.app(scope, receive, send)
            finally:
                seconds = time.perf_counter() - started
                waited = float(getattr(observed.turn, "waited_s", 0.0))
                metrics.request(front, observed.agent, status[0], seconds, waited)
                tracing.request_done(span, status[0], observed.agent, observed.conversation_id)
                if access_log.isEnabledFor(logging.INFO):
                    access_log.info(
                        "%s %s",
                        path,
                        status[0],
                        extra={
                            "front": front,
                            "agent": observed.agent,
                            "conversation_id": observed.conversation_id,
                            "status": status[0],
                            "ms": round(seconds * 1000, 3),
                        },
                    )
