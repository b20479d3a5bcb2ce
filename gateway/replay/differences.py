"""Comparing a replay with its cassette: volatile values normalised, every difference listed.

Both sides go through a :class:`Normaliser` of their own, in the same order, before anything is
compared:

- ids that change on every run are numbered in order of first appearance: ``call_…`` (12+
  characters after the prefix), ``chatcmpl-…`` and ``conv_<32 hex>`` become ``<call#1>``,
  ``<chatcmpl#1>``, ``<conv#1>``; so two runs compare equal when they use their ids in the
  same places, and a result answering the wrong call still shows;
- 32-hex-digit values (log record ids, ``Idempotency-Key`` values) become ``<hex>``, ISO 8601
  date-times ``<timestamp>``, and every ``Idempotency-Key`` header ``<idempotency-key>``;
- the keys ``created``, ``duration_ms``, ``timestamp``, ``system_fingerprint`` and ``usage``
  are dropped.

What is compared: each upstream payload (messages, so the tool results the model was given,
tools, tool choice, model), each action request (method, URL, headers, body, redacted forms),
each client response (status, final answer, tool calls, finish reason, the ``actiongate``
executions, ``ui`` and messages, error), and the stored log rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson

__all__ = [
    "ABSENT",
    "Comparison",
    "Difference",
    "Normaliser",
    "Observation",
    "diff_values",
    "is_token_request",
    "label_path",
    "row_view",
    "summarise_response",
]

ABSENT = "(absent)"
"""Stands for a value one side has and the other does not."""
VOLATILE_KEYS = frozenset({"created", "duration_ms", "timestamp", "system_fingerprint", "usage"})
_NUMBERED = (
    ("call", re.compile(r"\bcall_[A-Za-z0-9]{12,}\b")),
    ("chatcmpl", re.compile(r"\bchatcmpl-[A-Za-z0-9]{8,}\b")),
    ("conv", re.compile(r"\bconv_[0-9a-f]{32}\b")),
)
_FIXED = (
    (re.compile(r"\b[0-9a-f]{32}\b"), "<hex>"),
    (
        re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"),
        "<timestamp>",
    ),
)
_MESSAGE = re.compile(r"^messages\[(\d+)\]")
_TOOL = re.compile(r"^tools\[(\d+)\]")


class Normaliser:
    """Replaces the values that differ on every run with stable placeholders (one per side)."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def _number(self, kind: str, match: re.Match[str]) -> str:
        found = self._ids.get(match.group())
        if found is None:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            found = self._ids[match.group()] = f"<{kind}#{self._counts[kind]}>"
        return found

    def text(self, text: str) -> str:
        """``text`` with volatile ids and timestamps replaced."""
        for kind, pattern in _NUMBERED:
            text = pattern.sub(lambda m, kind=kind: self._number(kind, m), text)  # type: ignore[misc]
        for pattern, placeholder in _FIXED:
            text = pattern.sub(placeholder, text)
        return text

    def value(self, value: Any) -> Any:
        """A normalised copy of a JSON value."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if key in VOLATILE_KEYS:
                    continue
                if str(key).lower() == "idempotency-key":
                    out[key] = "<idempotency-key>"
                else:
                    out[self.text(str(key))] = self.value(item)
            return out
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value


def diff_values(recorded: Any, replayed: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every leaf where two JSON values differ, as ``(path, recorded, replayed)``."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(recorded.keys() | replayed.keys(), key=str):
            where = f"{path}.{key}" if path else str(key)
            out += diff_values(recorded.get(key, ABSENT), replayed.get(key, ABSENT), where)
        return out
    if isinstance(recorded, list) and isinstance(replayed, list):
        out = []
        for i in range(max(len(recorded), len(replayed))):
            a = recorded[i] if i < len(recorded) else ABSENT
            b = replayed[i] if i < len(replayed) else ABSENT
            out += diff_values(a, b, f"{path}[{i}]")
        return out
    return [] if recorded == replayed else [(path or "(value)", recorded, replayed)]


def _tool_name(messages: list[Any], call_id: Any) -> str:
    for message in messages:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            if isinstance(call, dict) and call.get("id") == call_id:
                return str((call.get("function") or {}).get("name") or "?")
    return "?"


def label_path(path: str, payload: Mapping[str, Any]) -> str:
    """Say what a path in an upstream payload is: the tool result of which call, and so on."""
    messages = payload.get("messages") or []
    if (m := _MESSAGE.match(path)) and int(m.group(1)) < len(messages):
        message = messages[int(m.group(1))]
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool":
            call_id = message.get("tool_call_id")
            name = _tool_name(messages, call_id)
            return f"{path} (tool result given to the model for {call_id}, {name})"
        if role == "assistant" and message.get("tool_calls"):
            return f"{path} (the model's tool calls)"
        return f"{path} ({role} message)"
    tools = payload.get("tools") or []
    if (m := _TOOL.match(path)) and int(m.group(1)) < len(tools):
        tool = tools[int(m.group(1))]
        function = (tool.get("function") or {}) if isinstance(tool, dict) else {}
        return f"{path} (tool schema {function.get('name')})"
    return path


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the replay differed from the cassette."""

    request: int | None
    """The client request (0-based); None for the stored log rows."""
    where: str
    """``upstream call 2``, ``action look_up_order (GET …)``, ``response``, ``log``."""
    what: str
    """The field, with what it means (e.g. which call a tool result answers)."""
    recorded: Any = None
    replayed: Any = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def describe(self) -> str:
        """Three lines: where and what, then both values (long texts around the change)."""
        head = "log rows" if self.request is None else f"request {self.request}"
        a, b = _shown(self.recorded, self.replayed)
        return f"- {head}, {self.where}: {self.what}\n    recorded: {a}\n    replayed: {b}"


def _shown(a: Any, b: Any, width: int = 160) -> tuple[str, str]:
    def text(v: Any) -> str:
        if isinstance(v, str) and v.isprintable():
            return v
        # Other values, and texts with line breaks, as JSON: one line each.
        return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()

    sa, sb = text(a), text(b)
    if len(sa) <= width and len(sb) <= width:
        return sa, sb
    start = next((i for i, (x, y) in enumerate(zip(sa, sb, strict=False)) if x != y), 0)
    start = max(0, start - width // 3)

    def window(s: str) -> str:
        part = s[start : start + width]
        return ("…" if start else "") + part + ("…" if start + width < len(s) else "")

    return window(sa), window(sb)


def _tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    out = []
    for call in calls:
        function = call.get("function") or {}
        out.append(
            {
                "id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments"),
            }
        )
    return out


def _extension(ext: Any) -> dict[str, Any] | None:
    if not isinstance(ext, dict):
        return None
    executions = [
        {k: e.get(k) for k in ("action", "outcome", "status_code")}
        for e in ext.get("executions") or []
    ]
    return {
        "conversation_id": ext.get("conversation_id"),
        "executions": executions,
        "messages": ext.get("messages"),
        "ui": ext.get("ui"),
    }


def summarise_response(line: Mapping[str, Any]) -> dict[str, Any]:
    """What a client saw: status, final answer, tool calls, finish reason, extension, error."""
    content: str | None = None
    calls: Any = None
    finish: Any = None
    ext: Any = None
    error: Any = None
    if "events" in line:
        parts: list[str] = []
        merged: dict[int, Any] = {}
        for event in line["events"]:
            if not isinstance(event, dict):
                continue
            error = event.get("error", error)
            ext = event.get("actiongate", ext)
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                parts += [delta["content"]] if delta.get("content") else []
                for call in delta.get("tool_calls") or []:
                    merged[int(call.get("index", len(merged)))] = call
                finish = choice.get("finish_reason") or finish
        content = "".join(parts) or None
        calls = [merged[i] for i in sorted(merged)]
    else:
        body = line.get("body", line.get("body_text"))
        if isinstance(body, dict) and body.get("choices"):
            choice = body["choices"][0]
            message = choice.get("message") or {}
            content, calls = message.get("content"), message.get("tool_calls")
            finish, ext = choice.get("finish_reason"), body.get("actiongate")
        else:
            error = body.get("error", body) if isinstance(body, dict) else body
    return {
        "status": line.get("status"),
        "content": content,
        "tool_calls": _tool_calls(calls),
        "finish_reason": finish,
        "actiongate": _extension(ext),
        "error": error,
    }


def row_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a stored log row a replay must reproduce."""
    response = row.get("response")
    return {
        "action": row.get("action"),
        "outcome": row.get("outcome"),
        "injected": row.get("injected"),
        "injected_content": row.get("injected_content"),
        "tool_call_id": row.get("tool_call_id"),
        "error": row.get("error"),
        "request": _comparable(row.get("request") or {}),
        "response": None
        if not isinstance(response, dict)
        else {k: response.get(k) for k in ("status_code", "body", "truncated")},
    }


# --- a replay against its cassette ---------------------------------------------------------


@dataclass(slots=True)
class Observation:
    """One call the gateway made during a replay, in the cassette's (redacted) form."""

    kind: Literal["upstream", "action"]
    sent: dict[str, Any]
    recorded: dict[str, Any] | None
    """The cassette line that answered it; None when the cassette had none (unexpected)."""
    synthetic: bool = False
    """Answered with a stand-in OAuth token."""


def is_token_request(sent: Mapping[str, Any]) -> bool:
    """Whether an action request is an OAuth client-credentials token request."""
    body = str(sent.get("body") or "")
    return sent.get("method") == "POST" and "grant_type=client_credentials" in body


class Comparison:
    """Compares a replay with its cassette, step by step, collecting :attr:`differences`.

    Each side has its own :class:`Normaliser`; both are fed in the same order, so ids line up.
    """

    def __init__(self) -> None:
        self.recorded, self.replayed = Normaliser(), Normaliser()
        self.differences: list[Difference] = []

    def _add(self, request: int | None, where: str, what: str, a: Any, b: Any) -> None:
        self.differences.append(Difference(request, where, what, a, b))

    def upstream(self, n: int, seen: list[Observation], left: list[dict[str, Any]]) -> None:
        for k, obs in enumerate(seen):
            sent = self.replayed.value(obs.sent["sent"])
            if obs.recorded is None:
                last = (sent.get("messages") or [ABSENT])[-1]
                self._add(n, f"upstream call {k}", "unexpected call (none recorded)", ABSENT, last)
                continue
            recorded = self.recorded.value(obs.recorded.get("sent") or {})
            for path, a, b in diff_values(recorded, sent):
                # Labelled from the raw payload, so the report shows the real call ids.
                self._add(n, f"upstream call {k}", label_path(path, obs.sent["sent"]), a, b)
        for k, line in enumerate(left, len(seen)):
            last = (self.recorded.value(line.get("sent") or {}).get("messages") or [None])[-1]
            self._add(n, f"upstream call {k}", "recorded call not made", last, ABSENT)

    def actions(self, n: int, seen: list[Observation], left: list[dict[str, Any]]) -> None:
        def order(obs: Observation) -> tuple[int, str]:
            seq = int(obs.recorded.get("seq", 0)) if obs.recorded else 1 << 30
            return seq, str(obs.sent.get("url"))

        for obs in sorted(seen, key=order):
            sent = self.replayed.value(_comparable(obs.sent))
            if obs.synthetic:
                continue
            if obs.recorded is None:
                where = f"action request {sent['method']} {sent['url']}"
                what = "unexpected request (none recorded; answered with a connection error)"
                self._add(n, where, what, ABSENT, sent)
                continue
            recorded = self.recorded.value(_comparable(obs.recorded["sent"]))
            where = _action_where(obs.recorded, recorded)
            for path, a, b in diff_values(recorded, sent):
                self._add(n, where, path, a, b)
        for line in left:
            recorded = self.recorded.value(_comparable(line["sent"]))
            self._add(
                n, _action_where(line, recorded), "recorded request not made", recorded, ABSENT
            )

    def response(
        self, n: int, recorded: Mapping[str, Any] | None, replayed: Mapping[str, Any]
    ) -> None:
        a = self.recorded.value(summarise_response(recorded or {}))
        b = self.replayed.value(summarise_response(replayed))
        for path, x, y in diff_values(a, b):
            what = "content (the final answer)" if path == "content" else path
            self._add(n, "response", what, x, y)

    def rows(self, recorded: list[dict[str, Any]], replayed: list[dict[str, Any]]) -> None:
        def where(raw: Mapping[str, Any]) -> str:
            return f"log row {raw.get('action')} ({raw.get('tool_call_id')})"

        mine = [(r, self.recorded.value(row_view(r))) for r in recorded]
        pending = [(r, self.replayed.value(row_view(r))) for r in replayed]
        for raw, row in mine:
            key = (row["tool_call_id"], row["action"])
            match = next((p for p in pending if p[1] == row), None) or next(
                (p for p in pending if (p[1]["tool_call_id"], p[1]["action"]) == key), None
            )
            if match is None:
                self._add(None, where(raw), "recorded row missing after the replay", row, ABSENT)
                continue
            pending.remove(match)
            for path, a, b in diff_values(row, match[1]):
                self._add(None, where(raw), path, a, b)
        for raw, row in pending:
            self._add(None, where(raw), "row not in the cassette", ABSENT, row)


def _comparable(sent: Mapping[str, Any]) -> dict[str, Any]:
    """An action request with its body parsed when it is JSON, so fields diff one by one."""
    out = {k: sent.get(k) for k in ("method", "url", "headers", "body")}
    if isinstance(out["body"], str):
        with suppress(orjson.JSONDecodeError):
            out["body"] = orjson.loads(out["body"])
    return out


def _action_where(line: Mapping[str, Any], sent: Mapping[str, Any]) -> str:
    name = line.get("action") or ("OAuth token" if is_token_request(line["sent"]) else "?")
    return f"action {name} ({sent['method']} {sent['url']})"
