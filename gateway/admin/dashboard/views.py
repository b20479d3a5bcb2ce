"""Plain data for the dashboard's templates (the templates never call services)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.stores.logs import ExecutionRecord

__all__ = ["LogRow", "log_rows", "pretty", "step_of"]

BODY_PREVIEW_CHARS = 4000

_STEP_FIELDS = {
    1: ("type",),
    3: ("when_not_to_use", "description"),
    4: ("variables", "args"),
}


def pretty(value: Any) -> str:
    """JSON for a ``<pre>`` (strings as they are)."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _preview(value: Any) -> str:
    text = pretty(value) if value is not None else ""
    if len(text) > BODY_PREVIEW_CHARS:
        return text[:BODY_PREVIEW_CHARS] + f"… ({len(text) - BODY_PREVIEW_CHARS} more characters)"
    return text


LogRow = dict[str, Any]


def log_rows(records: list[ExecutionRecord]) -> list[LogRow]:
    """One row per execution for the Logs tables."""
    rows = []
    for r in records:
        request = r.request or {}
        response = r.response or {}
        rows.append(
            {
                "id": r.id,
                "timestamp": r.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
                "agent": r.agent_id or "",
                "conversation_id": r.conversation_id or "",
                "action": r.action,
                "request": f"{request.get('method') or '-'} {request.get('url') or '-'}",
                "request_detail": _preview(request),
                "status": response.get("status_code", ""),
                "response": _preview(response.get("body")),
                "ms": f"{r.duration_ms:.0f}",
                "outcome": r.outcome,
                "error": r.error or "",
                "injected": "yes" if r.injected else "no",
            }
        )
    return rows


def step_of(param: str | None) -> int:
    """The wizard step holding the field an error names (2, Configure, by default)."""
    for step, names in _STEP_FIELDS.items():
        if param and param.split(".")[0] in names:
            return step
    return 2
