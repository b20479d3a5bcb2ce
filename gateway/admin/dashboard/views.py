"""Plain data for the dashboard's templates (the templates never call services)."""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
from markupsafe import Markup

from gateway.stores.health import HealthResult
from gateway.stores.logs import ExecutionRecord

__all__ = [
    "BIDI_CONTROLS",
    "HealthBadge",
    "LogRow",
    "health_badge",
    "health_rows",
    "log_detail",
    "log_rows",
    "pretty",
    "shown",
    "step_of",
    "template_parts",
    "visible_text",
]

_STEP_FIELDS = {
    1: ("type",),
    3: ("auth", "auth_type", "auth_token", "auth_password", "auth_value", "auth_client_secret"),
    4: ("when_not_to_use", "description", "cases"),
    5: ("variables", "args"),
}


BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
"""Bidirectional embeddings, overrides and isolates: they reorder the text around them."""


def visible_text(text: str) -> str:
    """``text`` with every bidi control written as its escape (``\\u202e``), so none reorders it.

    Customer, model and API text reaches every page (logs, test results, definitions); an
    override there would show ``invoice\\u202efdp.exe`` as ``invoiceexe.pdf``.
    """
    return BIDI_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def shown(value: Any) -> Any:
    """What the templates print for ``value``: text with its bidi controls made visible.

    The templates' ``finalize``, so it applies to every ``{{ ... }}`` of every page; markup
    (a macro's output) was finalized already, and the escapes it gains are plain text.
    """
    if isinstance(value, Markup):
        # Markup.replace keeps the markup (and would escape what it inserts: plain text here).
        for control in set(BIDI_CONTROLS.findall(value)):
            value = value.replace(control, visible_text(control))
        return value
    if isinstance(value, str):
        return visible_text(value)
    return value


def pretty(value: Any) -> str:
    """JSON for a ``<pre>`` (strings as they are)."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


LogRow = dict[str, Any]


def log_rows(records: list[ExecutionRecord]) -> list[LogRow]:
    """One line per execution for the Logs tables (the record's page shows the rest)."""
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
                "status": response.get("status_code", ""),
                "ms": f"{r.duration_ms:.0f}",
                "outcome": r.outcome,
                "error": r.error or "",
            }
        )
    return rows


def log_detail(record: ExecutionRecord) -> dict[str, Any]:
    """Every field of one record for its page, as stored (credentials already redacted)."""
    response = record.response or {}
    body = response.get("body")
    return {
        **record.to_dict(),
        "request": pretty(record.request or {}),
        "status": response.get("status_code", "-"),
        "truncated": "yes" if response.get("truncated") else "no",
        "response_body": "" if body is None else pretty(body),
        "ms": f"{record.duration_ms:.0f}",
        "injected": "yes" if record.injected else "no",
    }


HealthBadge = Literal["healthy", "failing", "no check", "not run yet"]


def health_badge(definition: dict[str, Any], latest: HealthResult | None) -> HealthBadge:
    """An action's health as the actions list and its page show it."""
    if not definition.get("health_check"):
        return "no check"
    if latest is None:
        return "not run yet"
    return "healthy" if latest.ok else "failing"


def health_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per health check result (as the admin API returns them), newest first."""
    return [
        {
            "time": str(r["time"])[:19].replace("T", " "),
            "outcome": "healthy" if r["ok"] else "failing",
            "status": "-" if r["status_code"] is None else r["status_code"],
            "ms": f"{r['duration_ms']:.0f}",
            "kind": "rendered only" if r["dry"] else "sent",
            "error": r["error"] or "",
        }
        for r in results
    ]


_TAG = re.compile(r"\{\{.*?\}\}", re.S)


def template_parts(text: str) -> list[tuple[str, bool]]:
    """``text`` as (piece, is a ``{{ variable }}``) pairs, for pages that mark the variables."""
    parts: list[tuple[str, bool]] = []
    start = 0
    for m in _TAG.finditer(text):
        if m.start() > start:
            parts.append((text[start : m.start()], False))
        parts.append((m.group(), True))
        start = m.end()
    if start < len(text):
        parts.append((text[start:], False))
    return parts


def step_of(param: str | None) -> int:
    """The wizard step holding the field an error names (2, Configure, by default).

    A form's or a button's request editor (``submit_auth_type``) is on the same steps as the
    HTTP action's (``auth_type``).
    """
    head = (param or "").split(".")[0]
    for prefix in ("submit_", "button_"):
        head = head.removeprefix(prefix)
    for step, names in _STEP_FIELDS.items():
        if head in names:
            return step
    return 2
