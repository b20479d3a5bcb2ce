"""Guardrail check cases as the dashboard's case rows, and back.

A case row (``case-INDEX-FIELD``, see :mod:`.editors`) has a customer message, what the model
should do (``call`` or ``skip``), conversation variables and expected arguments written as
``name=value`` pairs separated by commas (``lead.email=jane@example.com, conversation.channel=
chat``), and a Delete checkbox. A row whose text fields are blank, or that is ticked for
deletion, is left out. The Guardrail check tab and the wizard's "When not to use" step share
these rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.admin.dashboard.editors import filled_rows, rows_form
from gateway.errors import RequestError
from gateway.evaluation.action_cases import ActionCase, parse_cases

__all__ = ["case_form", "case_rows", "cases_of", "without_cases"]

_PAIR_BREAK = re.compile(r"\s*[,\n]\s*(?=[A-Za-z_][\w.]*\s*=)")
"""A comma (or newline) followed by the next ``name=``: values themselves may hold commas."""
_CASE_INDEX = re.compile(r"^cases\[(\d+)\]")


def _pairs(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _PAIR_BREAK.split(text.strip()):
        if not item.strip():
            continue
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise RequestError(
                422,
                f"{where}: write name=value pairs, e.g. lead.email=jane@example.com",
                "invalid_cases",
                "cases",
            )
        out[name.strip()] = value.strip()
    return out


def _text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def cases_of(form: Mapping[str, str]) -> list[ActionCase]:
    """The cases the posted rows describe, checked.

    Raises:
        RequestError: 422 naming the row ("Case 2") and the field that is wrong.
    """
    data = []
    rows = [row for row in filled_rows(form, "case") if row.get("delete") != "on"]
    for number, row in enumerate(rows, start=1):
        case: dict[str, Any] = {
            "message": row["message"],
            "expect": row["expect"] or "call",
            "variables": _pairs(row["variables"], f"Case {number} conversation variables"),
        }
        if row["arguments"].strip():
            case["arguments"] = _pairs(row["arguments"], f"Case {number} expected arguments")
        data.append(case)
    try:
        return parse_cases(data)
    except RequestError as e:
        message = _CASE_INDEX.sub(lambda m: f"Case {int(m.group(1)) + 1}", str(e))
        raise RequestError(422, message, e.code, "cases") from None


def case_rows(cases: Iterable[ActionCase]) -> list[dict[str, str]]:
    """Rows showing ``cases``."""
    return [
        {
            "message": c.message,
            "expect": c.expect,
            "variables": _text(c.variables),
            "arguments": _text(c.arguments),
            "delete": "",
        }
        for c in cases
    ]


def case_form(cases: Iterable[ActionCase]) -> dict[str, str]:
    """Form fields for ``cases`` (what :func:`cases_of` reads back)."""
    return rows_form("case", case_rows(cases))


def without_cases(form: Mapping[str, str]) -> dict[str, str]:
    """The form with its case rows left out."""
    return {k: v for k, v in form.items() if not k.startswith("case-")}
