"""The recorder behind ``actiongate serve --record DIR``: one cassette per conversation.

A cassette holds one conversation as the gateway saw it: each client request, each upstream
exchange (streamed chunks kept as sent), each action HTTP exchange, the client response and the
stored log rows, all with credentials redacted. The file format is described in
:mod:`gateway.replay.cassette` and ``docs/CASSETTES.md``; :mod:`gateway.replay.run` plays one back.

:class:`Recorder` wraps the ASGI app built by :func:`~gateway.app.create_app`. Each
``POST /v1/chat/completions`` gets a tape, held in a context variable so that parallel action
tasks and the streaming task write to the request that started them. The hooks installed on
:class:`~gateway.net.upstream.Upstream` and :class:`~gateway.net.outbound.Outbound` (their ``hook``
attributes) pass every call on and note it on the tape; calls made outside a chat request (the
admin API's tests) are passed on unrecorded. When the response is complete, the tape is
redacted and appended to the conversation's cassette, with the log rows of the recorded requests.

Only those rows: a conversation may have executions from before recording started (an earlier
``serve`` on the same database, a front that is not recorded, ``actiongate test`` with its
``conversation.id``), and a replay, which starts from an empty log, could never reproduce them.
A tape notes a fresh record id when its request starts; record ids sort by time, so the rows
newer than that mark are the request's own. The recorder keeps, per conversation, the ids of
every recorded request's rows (reading them back from an existing cassette), and writes those
rows, as they are stored now (a later request may have marked one injected), after each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import EgressBlocked, UpstreamError
from gateway.net.outbound import ConnectFailed, OutboundCall, OutboundResponse, SendFn
from gateway.net.upstream import CompleteFn, StreamFn, UpstreamTarget
from gateway.redaction import REDACTED, Redactor
from gateway.replay.cassette import (
    FORMAT_VERSION,
    body_fields,
    call_fields,
    cassette_path,
    conversation_of,
    dump_line,
    json_copy,
    json_fields,
    redact_action_sent,
    redact_client_request,
    redact_exchange,
    redact_value,
    response_fields,
    snapshot_config,
)
from gateway.stores.logs import MAX_PAGE_SIZE, new_execution_id
from gateway.version import __version__

__all__ = ["CHAT_PATH", "Recorder", "RecordingApp", "recording_redactor"]

CHAT_PATH = "/v1/chat/completions"
_TOKEN_KEYS = ("access_token", "refresh_token", "id_token")
log = logging.getLogger("actiongate.recording")


def recording_redactor(services: Any) -> Redactor:
    """The runtime's redactor plus the upstream and client keys of its config."""
    config = services.runtime.config
    keys = [config.upstream.api_key]
    for agent in config.agents:
        keys += agent.api_keys
        if agent.upstream is not None and agent.upstream.api_key:
            keys.append(agent.upstream.api_key)
    redactor: Redactor = services.runtime.redactor.child(*(k for k in keys if k))
    return redactor


# --- recording ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Tape:
    """What one client request caused, in the order the calls started."""

    events: list[dict[str, Any]] = field(default_factory=list)
    since: str = field(default_factory=new_execution_id)
    """A record id issued when the request started: the request's own rows sort after it."""

    def start(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"kind": kind, "seq": len(self.events), **fields}
        self.events.append(event)
        return event


_TAPE: ContextVar[_Tape | None] = ContextVar("actiongate_tape", default=None)


class _RecordingUpstream:
    """Passes upstream calls on, noting each one on the current tape."""

    async def complete(
        self, target: UpstreamTarget, payload: dict[str, Any], send: CompleteFn
    ) -> dict[str, Any]:
        tape = _TAPE.get()
        if tape is None:
            return await send(target, payload)
        event = tape.start("upstream", stream=False, sent=json_copy(payload))
        try:
            response = await send(target, payload)
        except UpstreamError as e:
            event["error"] = {"status": e.status, "message": str(e), "code": e.code}
            raise
        event["received"] = json_copy(response)
        return response

    async def stream(
        self, target: UpstreamTarget, payload: dict[str, Any], send: StreamFn
    ) -> AsyncIterator[dict[str, Any]]:
        tape = _TAPE.get()
        event = None
        if tape is not None:
            event = tape.start("upstream", stream=True, sent=json_copy(payload))
        async with contextlib.aclosing(send(target, payload)) as chunks:
            try:
                async for chunk in chunks:
                    if event is not None:
                        event.setdefault("chunks", []).append(json_copy(chunk))
                    yield chunk
            except UpstreamError as e:
                if event is not None:
                    event["error"] = {"status": e.status, "message": str(e), "code": e.code}
                raise
            finally:
                if event is not None:
                    event.setdefault("chunks", [])


class _RecordingOutbound:
    """Passes action requests on, noting each exchange on the current tape."""

    async def send(self, call: OutboundCall, send: SendFn) -> OutboundResponse:
        tape = _TAPE.get()
        if tape is None:
            return await send(call)
        sent = call_fields(call)
        event = tape.start("action", sent=sent)
        try:
            response = await send(call)
        except TimeoutError:
            event["error"] = {"kind": "timeout", "message": ""}
            raise
        except EgressBlocked as e:
            event["error"] = {"kind": "blocked", "host": e.host, "message": e.reason}
            raise
        except ConnectFailed as e:
            event["error"] = {"kind": "connect_error", "message": str(e)}
            raise
        event["received"] = {
            "status": response.status,
            "headers": dict(response.headers),
            "truncated": response.truncated,
            "attempts": response.attempts,
            **body_fields(response.body),
        }
        return response


class Recorder:
    """Writes one cassette per conversation into ``directory`` (``serve --record DIR``)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._services: Any = None
        self._redactor = Redactor()
        self._conversations: dict[str, _Recorded] = {}
        self._lock = asyncio.Lock()

    def wrap(self, app: ASGIApp) -> RecordingApp:
        """The ASGI app to serve instead of ``app`` (a :func:`~gateway.app.create_app` app)."""
        return RecordingApp(app, self)

    def attach(self, services: Any) -> None:
        """Install the recording hooks on a started app's :class:`~gateway.app.Services`."""
        if services is self._services:
            return
        services.upstream.hook = _RecordingUpstream()
        services.runtime.outbound.hook = _RecordingOutbound()
        self._redactor = recording_redactor(services)
        self._services = services
        self.directory.mkdir(parents=True, exist_ok=True)

    async def save(
        self, request: Mapping[str, Any], response: Mapping[str, Any], tape: _Tape
    ) -> Path | None:
        """Append one client request and everything it caused to its conversation's cassette.

        Returns:
            The cassette's path, or None when the request belongs to no conversation.
        """
        conversation_id = conversation_of(request, response)
        services = self._services
        if not conversation_id or services is None:
            return None
        await services.runtime.logstore.flush()
        records, _ = await services.runtime.logstore.query(
            conversation_id=conversation_id, limit=MAX_PAGE_SIZE
        )
        async with self._lock:
            path = cassette_path(self.directory, conversation_id)
            recorded = self._recorded(path, conversation_id)
            index = recorded.requests
            recorded.requests += 1
            own = [r.to_dict() for r in reversed(records) if r.id > tape.since]
            recorded.rows.update(r["id"] for r in own)
            rows = [r.to_dict() for r in reversed(records) if r.id in recorded.rows]
            self._learn_tokens(tape.events)
            redactor = self._redactor
            lines: list[dict[str, Any]] = []
            if index == 0:
                config = snapshot_config(services.runtime.config, services.workspace, redactor)
                header = {
                    "actiongate_cassette": FORMAT_VERSION,
                    "recorded_by": f"actiongate {__version__}",
                }
                lines.append({"kind": "header", "conversation_id": conversation_id, **header})
                lines.append({"kind": "config", "config": config})
            step = [{"kind": "request", **redact_client_request(request, redactor)}]
            step += [
                redact_exchange(e, redactor) for e in _name_actions(tape.events, own, redactor)
            ]
            step.append({"kind": "response", **redact_value(dict(response), redactor)})
            step.append({"kind": "executions", "records": redact_value(rows, redactor)})
            for line in step:
                line["request"] = index
            text = "".join(dump_line(line) + "\n" for line in lines + step)
            await asyncio.to_thread(_append, path, text)
        return path

    def _recorded(self, path: Path, conversation_id: str) -> _Recorded:
        """What the cassette holds so far (read from the file the first time)."""
        found = self._conversations.get(conversation_id)
        if found is None:
            found = self._conversations[conversation_id] = _Recorded()
            if path.exists():
                for text in path.read_text(encoding="utf-8").splitlines():
                    line = orjson.loads(text)
                    found.requests += line.get("kind") == "request"
                    if line.get("kind") == "executions":
                        found.rows.update(str(r.get("id")) for r in line.get("records") or [])
        return found

    def _learn_tokens(self, events: list[dict[str, Any]]) -> None:
        """Register OAuth tokens seen in token responses, so they are redacted everywhere."""
        for event in events:
            received = event.get("received") or {}
            text = received.get("body") if event["kind"] == "action" else None
            if not isinstance(text, str) or "_token" not in text:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(text)
                if isinstance(data, dict):
                    for key in _TOKEN_KEYS:
                        if isinstance(data.get(key), str) and data[key] != REDACTED:
                            self._redactor.add_secret(data[key])


@dataclass(slots=True)
class _Recorded:
    """One conversation's cassette so far: its client requests and the ids of their rows."""

    requests: int = 0
    rows: set[str] = field(default_factory=set)


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def _name_actions(
    events: list[dict[str, Any]], rows: list[dict[str, Any]], redactor: Redactor
) -> list[dict[str, Any]]:
    """Note on each action exchange the tool whose execution made it (this request's rows)."""
    unused = list(reversed(rows))
    for event in reversed(events):
        if event["kind"] != "action":
            continue
        sent = redact_action_sent(event["sent"], redactor)
        event["action"] = event["tool_call_id"] = None
        for row in unused:
            request = row.get("request") or {}
            if request.get("method") == sent["method"] and request.get("url") == sent["url"]:
                event["action"], event["tool_call_id"] = row["action"], row.get("tool_call_id")
                unused.remove(row)
                break
    return events


class RecordingApp:
    """ASGI middleware recording every chat completion request of the wrapped app."""

    def __init__(self, app: ASGIApp, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection, recording it when it is a chat completion request."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != CHAT_PATH:
            await self.app(scope, receive, send)
            return
        state = getattr(self.app, "state", None)
        services = getattr(state, "services", None)
        if services is not None:
            self.recorder.attach(services)
        tape = _Tape()
        body, out = bytearray(), bytearray()
        status = 0

        async def receive_body() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def send_response(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                out.extend(message.get("body", b""))
            await send(message)

        token = _TAPE.set(tape)
        try:
            await self.app(scope, receive_body, send_response)
        finally:
            _TAPE.reset(token)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request = {"headers": headers, **json_fields(bytes(body), "body")}
        try:
            await self.recorder.save(request, response_fields(status, bytes(out)), tape)
        except Exception:  # recording must never break serving
            log.exception("could not write the cassette")
