"""The cassette file format (version 1): reading, writing and redacting its lines.

A cassette is one conversation in a UTF-8 JSON Lines file named after the conversation id
(``<id>.jsonl``, unsafe characters replaced and a short hash added). Every line is one JSON
object with sorted keys and a ``kind``; lines are only ever appended, so re-recording or
extending a conversation gives a readable diff::

    header      {"actiongate_cassette": 1, "conversation_id", "recorded_by"}      first line
    config      {"config": {...}}   the config the gateway ran with, credentials redacted, in
                its own key order (a body's or query's key order reaches the wire)
    request     {"request": n, "headers", "body" | "body_text"}      client request n
    upstream    {"request": n, "seq", "stream", "sent", "received" | "chunks", "error"?}
    action      {"request": n, "seq", "action", "tool_call_id", "sent", "received" | "error"}
    response    {"request": n, "status", "body" | "body_text" | "events"}
    executions  {"request": n, "records": [...]}   the recorded requests' log rows after n

For each client request ``n`` (0, 1, ...) the lines come in that order; ``seq`` numbers the
upstream and action exchanges of one request in the order they started.

- ``request.headers`` keeps only the headers the gateway reads (``authorization``,
  ``content-type``, ``x-conversation-id``, ``x-user-id``, ``x-channel``).
- ``config`` has no ``database``: a replay uses a temporary one (or the one it is given).
- ``upstream.sent`` is the payload sent to the LLM API (its ``messages`` hold the tool results
  the model was given); ``received`` the completion, or ``chunks`` every streamed
  ``chat.completion.chunk`` as sent; ``error`` ``{status, message, code}`` when it failed.
- ``action.sent`` is ``{method, url, headers, body}``; ``received`` is ``{status, headers, body,
  truncated, attempts}`` (``body_base64`` instead of ``body`` for bytes that are not UTF-8);
  ``error`` is ``{kind: timeout|connect_error|blocked, message}``. ``action`` names the tool whose
  execution made the call (null for an OAuth token request).
- ``response.events`` holds each ``data:`` payload of a streamed response, parsed (``"[DONE]"``
  kept as a string).
- ``executions.records`` are the stored log rows (README, "Execution engine") of the cassette's
  recorded requests up to ``n``, as stored after request ``n``, oldest first; rows the
  conversation had from requests that were not recorded are left out.

Credentials never reach the file: every value goes through the runtime's
:class:`~gateway.redaction.Redactor` (headers by name and value, URLs by parameter name and
value, everything else by value), which also knows the upstream and client keys and the OAuth
tokens seen in token responses. The config's secrets, keys and literal credentials become
``[REDACTED]``; replaying with that config renders ``[REDACTED]`` where the secret was, which
redacts to the same form the cassette holds.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import ActionGateError
from gateway.net.outbound import OutboundCall
from gateway.redaction import REDACTED, Redactor, is_credential_header, is_credential_param

__all__ = [
    "CLIENT_HEADERS",
    "FORMAT_VERSION",
    "Cassette",
    "CassetteError",
    "CassetteRequest",
    "body_bytes",
    "body_fields",
    "call_fields",
    "cassette_path",
    "conversation_of",
    "dump_line",
    "json_copy",
    "json_fields",
    "load_cassette",
    "parse_cassette",
    "redact_action_sent",
    "redact_client_request",
    "redact_exchange",
    "redact_value",
    "response_fields",
    "snapshot_config",
]

FORMAT_VERSION = 1
CLIENT_HEADERS = ("authorization", "content-type", "x-conversation-id", "x-user-id", "x-channel")
"""The request headers a cassette keeps: the only ones the gateway reads."""
_AUTH_PLAIN_FIELDS = frozenset({"type", "name", "in", "token_url", "scope", "username"})
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class CassetteError(ActionGateError):
    """A cassette file cannot be read (missing, malformed, or a newer format version)."""


@dataclass(slots=True)
class CassetteRequest:
    """One client request of a cassette and what it caused."""

    index: int
    request: dict[str, Any]
    upstream: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    response: dict[str, Any] | None = None
    executions: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class Cassette:
    """A parsed cassette."""

    conversation_id: str
    config: dict[str, Any] | None
    requests: list[CassetteRequest]
    version: int = FORMAT_VERSION
    path: Path | None = None

    @property
    def executions(self) -> list[dict[str, Any]]:
        """The stored log rows after the last request that recorded them."""
        for step in reversed(self.requests):
            if step.executions is not None:
                return step.executions
        return []


def json_copy(value: Any) -> Any:
    """A deep copy holding only JSON types (the proxy mutates what it sends and receives)."""
    return orjson.loads(orjson.dumps(value))


def dump_line(line: Mapping[str, Any]) -> str:
    """One cassette line: compact JSON with sorted keys (no trailing newline).

    The config keeps its own order: the order of a body's or query's keys reaches the wire.
    """
    if line.get("kind") == "config":
        config = orjson.dumps(line.get("config"), option=orjson.OPT_NON_STR_KEYS).decode()
        return f'{{"config":{config},"kind":"config"}}'
    return orjson.dumps(line, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def parse_cassette(text: str, path: Path | None = None) -> Cassette:
    """Parse a cassette's text.

    Raises:
        CassetteError: malformed lines, a missing header, or an unsupported version.
    """
    where = str(path) if path else "cassette"
    lines: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise CassetteError(f"{where}:{number}: not JSON ({e})") from None
        if not isinstance(line, dict) or not isinstance(line.get("kind"), str):
            raise CassetteError(f"{where}:{number}: expected an object with a 'kind'")
        lines.append(line)
    if not lines or lines[0]["kind"] != "header":
        raise CassetteError(f"{where}: not an actiongate cassette (no header line)")
    version = lines[0].get("actiongate_cassette")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CassetteError(f"{where}: cassette format {version!r} is not supported")
    cassette = Cassette(str(lines[0].get("conversation_id", "")), None, [], version, path)
    steps: dict[int, CassetteRequest] = {}
    for line in lines[1:]:
        kind = line["kind"]
        if kind == "config":
            cassette.config = line.get("config")
            continue
        index = line.get("request")
        if not isinstance(index, int):
            raise CassetteError(f"{where}: a {kind!r} line has no request number")
        if kind == "request":
            steps[index] = CassetteRequest(index, line)
            continue
        step = steps.get(index)
        if step is None:
            raise CassetteError(f"{where}: a {kind!r} line comes before request {index}")
        if kind == "upstream":
            step.upstream.append(line)
        elif kind == "action":
            step.actions.append(line)
        elif kind == "response":
            step.response = line
        elif kind == "executions":
            step.executions = list(line.get("records") or [])
    cassette.requests = [steps[i] for i in sorted(steps)]
    for step in cassette.requests:
        step.upstream.sort(key=lambda e: int(e.get("seq", 0)))
        step.actions.sort(key=lambda e: int(e.get("seq", 0)))
    return cassette


def load_cassette(path: str | Path) -> Cassette:
    """Read a cassette file; raises :class:`CassetteError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CassetteError(f"cannot read cassette {path}: {e.strerror or e}") from None
    return parse_cassette(text, path)


def cassette_path(directory: Path, conversation_id: str) -> Path:
    """Where the cassette of ``conversation_id`` lives in ``directory``."""
    name = _UNSAFE_NAME.sub("_", conversation_id)[:100].lstrip(".") or "conversation"
    if name != conversation_id:
        name += "-" + hashlib.sha256(conversation_id.encode()).hexdigest()[:8]
    return directory / f"{name}.jsonl"


def conversation_of(request: Mapping[str, Any], response: Mapping[str, Any]) -> str | None:
    """The conversation a recorded request belongs to: the response's, else the request's."""
    bodies = [response.get("body"), *reversed(response.get("events") or [])]
    for body in bodies:
        extension = body.get("actiongate") if isinstance(body, dict) else None
        if isinstance(extension, dict) and isinstance(extension.get("conversation_id"), str):
            return str(extension["conversation_id"])
    body = request.get("body")
    given = body.get("conversation") if isinstance(body, dict) else None
    if isinstance(given, dict) and isinstance(given.get("id"), str) and given["id"]:
        return str(given["id"])
    header = (request.get("headers") or {}).get("x-conversation-id")
    return str(header) if header else None


def json_fields(data: bytes, name: str) -> dict[str, Any]:
    """``{name: parsed JSON}``, or ``{name_text: text}`` when ``data`` is not JSON."""
    try:
        return {name: orjson.loads(data)}
    except orjson.JSONDecodeError:
        return {f"{name}_text": data.decode("utf-8", errors="replace")}


def response_fields(status: int, data: bytes) -> dict[str, Any]:
    """A client response as a cassette keeps it: JSON body, or the stream's events."""
    if not data.startswith(b"data:"):
        return {"status": status, **json_fields(data, "body")}
    events: list[Any] = []
    for line in data.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            events.append("[DONE]" if payload == b"[DONE]" else json_fields(payload, "e")["e"])
    return {"status": status, "events": events}


# --- bodies and redaction -------------------------------------------------------------------


def body_fields(data: bytes | None) -> dict[str, Any]:
    """``{"body": text}``, ``{"body_base64": ...}`` for bytes that are not UTF-8, or None."""
    if data is None:
        return {"body": None}
    try:
        return {"body": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(data).decode("ascii")}


def call_fields(call: OutboundCall) -> dict[str, Any]:
    """An outbound call as a cassette's ``sent`` object (before redaction)."""
    return {
        "method": call.method,
        "url": call.url,
        "headers": dict(call.headers),
        **body_fields(call.body),
    }


def body_bytes(fields: Mapping[str, Any]) -> bytes:
    """The bytes :func:`body_fields` described."""
    if fields.get("body_base64") is not None:
        return base64.b64decode(fields["body_base64"])
    return str(fields.get("body") or "").encode("utf-8")


def redact_value(value: Any, redactor: Redactor) -> Any:
    """Redact every string of a JSON value by value (names are left alone: tool schemas and
    payloads use credential-like words as ordinary field names)."""
    if isinstance(value, str):
        return redactor.redact_text(value)
    if isinstance(value, Mapping):
        return {redactor.redact_text(str(k)): redact_value(v, redactor) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v, redactor) for v in value]
    return value


def redact_client_request(request: Mapping[str, Any], redactor: Redactor) -> dict[str, Any]:
    """A client request's kept headers (redacted by name and value) and body (by value)."""
    headers = {k: v for k, v in (request.get("headers") or {}).items() if k in CLIENT_HEADERS}
    out = {k: redact_value(v, redactor) for k, v in request.items() if k != "headers"}
    out["headers"] = redactor.redact_headers(headers)
    return out


def redact_action_sent(sent: Mapping[str, Any], redactor: Redactor) -> dict[str, Any]:
    """An action request ``{method, url, headers, body}`` in its redacted form."""
    out = dict(sent)
    out["url"] = redactor.redact_url(str(sent.get("url", "")))
    out["headers"] = redactor.redact_headers(sent.get("headers") or {})
    if isinstance(sent.get("body"), str):
        out["body"] = redactor.redact_text(sent["body"])
    return out


def redact_exchange(event: Mapping[str, Any], redactor: Redactor) -> dict[str, Any]:
    """An upstream or action line in its redacted form."""
    out = dict(event)
    if event["kind"] == "action":
        out["sent"] = redact_action_sent(event["sent"], redactor)
        received = event.get("received")
        if received is not None:
            out["received"] = {
                **received,
                "headers": redactor.redact_headers(received.get("headers") or {}),
                "body": redact_value(received.get("body"), redactor),
            }
    for key in ("sent", "received", "chunks", "error") if event["kind"] == "upstream" else ():
        if key in event:
            out[key] = redact_value(event[key], redactor)
    if isinstance(out.get("error"), dict):
        out["error"] = redact_value(out["error"], redactor)
    return out


def _redact_literal(value: Any) -> Any:
    """A credential written literally in a definition; ``{{...}}`` references are kept."""
    if isinstance(value, str) and value and "{{" not in value:
        return REDACTED
    return value


def _redact_definition(node: Any, redactor: Redactor) -> Any:
    """Literal credentials in action definitions: credential headers and params, auth fields."""
    if isinstance(node, list):
        return [_redact_definition(v, redactor) for v in node]
    if not isinstance(node, dict):
        return redact_value(node, redactor)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("headers", "query") and isinstance(value, dict):
            named = is_credential_header if key == "headers" else is_credential_param
            value = {k: _redact_literal(v) if named(k) else v for k, v in value.items()}
        elif key == "auth" and isinstance(value, dict):
            value = {
                k: v if k in _AUTH_PLAIN_FIELDS else _redact_literal(v) for k, v in value.items()
            }
        elif key in ("url", "token_url") and isinstance(value, str) and "{{" not in value:
            value = redactor.redact_url(value)
        out[key] = _redact_definition(value, redactor)
    return out


def snapshot_config(config: Any, workspace: Any, redactor: Redactor) -> dict[str, Any]:
    """The running config (with the workspace's live actions and agents), credentials redacted.

    Args:
        config: The :class:`~gateway.definitions.config.Config` the gateway started with.
        workspace: Its :class:`~gateway.engine.workspace.Workspace` (definitions may have changed).
        redactor: The recording's redactor.
    """
    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["actions"] = [
        a.model_dump(mode="json", by_alias=True, exclude_none=True)
        for a in workspace.actions.values()
    ]
    data["agents"] = [
        a.model_dump(mode="json", exclude_none=True) for a in workspace.agents.values()
    ]
    data["secrets"] = {name: REDACTED for name in data.get("secrets") or {}}
    data.pop("database", None)  # a replay brings its own; the URL may name hosts and users
    for holder in [data.get("upstream") or {}, *(a.get("upstream") or {} for a in data["agents"])]:
        if holder.get("api_key"):
            holder["api_key"] = REDACTED
    for agent in data["agents"]:
        agent["api_keys"] = [REDACTED for _ in agent.get("api_keys") or []]
    data["actions"] = _redact_definition(data["actions"], redactor)
    redacted: dict[str, Any] = redact_value(data, redactor)  # e.g. a secret in a system prompt
    return redacted
