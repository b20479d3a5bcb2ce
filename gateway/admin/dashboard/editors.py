"""The wizard's row editors: headers, query parameters, model arguments, form fields and the
Guardrail check cases (read by :mod:`.case_rows`). A form's submit request and a button's HTTP
request have header and query rows of their own (:data:`REQUEST_EDITORS`).

Each row is a group of form fields named ``KIND-INDEX-FIELD`` (``header-0-name``,
``param-2-required``), so a row survives a post-back without JavaScript, an unticked checkbox
cannot shift the rows after it, and the page script only has to copy a blank row to add one.
A row whose text fields are all blank is left out, which is also how a row is removed without
the script. Errors are :class:`~gateway.errors.RequestError` (422) whose ``param`` names the
definition field (``headers``, ``parameters``, ``fields``) and whose message names the row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, get_args

from gateway.definitions.actions import FieldType, ParamType
from gateway.errors import RequestError

__all__ = [
    "FIELD_TYPES",
    "MAX_ROWS",
    "PARAM_TYPES",
    "REQUEST_EDITORS",
    "ROW_FIELDS",
    "editor_rows",
    "field_rows",
    "filled_rows",
    "form_fields_of",
    "pair_rows",
    "pairs_of",
    "parameter_rows",
    "parameters_of",
    "rows_form",
]

ROW_FIELDS: dict[str, tuple[str, ...]] = {
    "header": ("name", "value"),
    "query": ("name", "value"),
    "authheader": ("name", "value"),
    "param": ("name", "type", "description", "required", "enum"),
    "field": ("name", "label", "type", "required", "options", "pattern", "maps_to"),
    "case": ("message", "expect", "variables", "arguments", "delete"),
}
"""Each row kind's fields, in the order the page shows them."""
REQUEST_EDITORS: dict[str, str] = {"submit_": "Submit request", "button_": "Button request"}
"""The request editors beyond the HTTP action's own, by field prefix: a form's submit request
and a button's HTTP request. Each has the HTTP action's fields, prefixed (``submit_url``,
``submit_header-0-name``), and the name its labels and errors use."""
ROW_FIELDS |= {
    f"{prefix}{kind}": ("name", "value")
    for prefix in REQUEST_EDITORS
    for kind in ("header", "query", "authheader")
}

_CHOICES = ("type", "required", "expect", "delete")
"""Fields with a default (a select, a checkbox): they alone do not make a row filled."""
MAX_ROWS = 200
"""Indexes past this are ignored, so a forged form cannot make the page render a million rows."""
PARAM_TYPES: tuple[str, ...] = get_args(ParamType)
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)

Row = dict[str, str]


def _fail(param: str, message: str) -> RequestError:
    return RequestError(422, message, code="invalid_definition", param=param)


def _posted_rows(form: Mapping[str, str], kind: str) -> list[Row]:
    """Every posted row of ``kind`` in index order, blank ones included."""
    pattern = re.compile(rf"^{kind}-(\d{{1,4}})-([a-z_]+)$")
    found = (pattern.match(key) for key in form)
    indexes = sorted({int(m.group(1)) for m in found if m and int(m.group(1)) < MAX_ROWS})
    return [{f: form.get(f"{kind}-{i}-{f}", "") for f in ROW_FIELDS[kind]} for i in indexes]


def _filled(row: Row) -> bool:
    return any(value.strip() for key, value in row.items() if key not in _CHOICES)


def filled_rows(form: Mapping[str, str], kind: str) -> list[Row]:
    """The rows of ``kind`` the operator filled in."""
    return [row for row in _posted_rows(form, kind) if _filled(row)]


def editor_rows(form: Mapping[str, str], add: str | None = None) -> dict[str, list[Row]]:
    """The rows each editor shows: the filled ones, then one blank row (two after "Add row")."""
    out: dict[str, list[Row]] = {}
    for kind, fields in ROW_FIELDS.items():
        blank = {f: "" for f in fields}
        out[kind] = filled_rows(form, kind) + [dict(blank)] * (2 if add == kind else 1)
    return out


def rows_form(kind: str, rows: list[Row]) -> dict[str, str]:
    """Form fields for ``rows`` (the inverse of reading them)."""
    return {f"{kind}-{i}-{key}": value for i, row in enumerate(rows) for key, value in row.items()}


def pairs_of(form: Mapping[str, str], kind: str, param: str, label: str) -> dict[str, str]:
    """Name/value rows (headers, query parameters) as a map; a name may appear once."""
    out: dict[str, str] = {}
    for number, row in enumerate(filled_rows(form, kind), start=1):
        name = row["name"].strip()
        if not name:
            raise _fail(param, f"{label}, row {number}: the name is empty")
        if name in out:
            raise _fail(param, f"{label}, row {number}: {name!r} is already set in an earlier row")
        out[name] = row["value"].strip()
    return out


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _enum_value(kind: str, text: str, where: str) -> str | int | float | bool:
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        raise _fail("parameters", f"{where}: {text!r} is not a {kind}") from None
    if kind == "boolean":
        if text not in ("true", "false"):
            raise _fail("parameters", f"{where}: a boolean's values are true and false")
        return text == "true"
    return text


def _parameter(row: Row, where: str) -> dict[str, Any]:
    kind = row["type"] or "string"
    if kind not in PARAM_TYPES:
        raise _fail("parameters", f"{where}: type must be one of {', '.join(PARAM_TYPES)}")
    out: dict[str, Any] = {"type": kind}
    if row["description"].strip():
        out["description"] = row["description"].strip()
    if row["required"] == "on":
        out["required"] = True
    choices = _split(row["enum"])
    if choices:
        out["enum"] = [_enum_value(kind, c, f"{where}, allowed values") for c in choices]
    return out


def parameters_of(form: Mapping[str, str]) -> dict[str, Any]:
    """The model-filled arguments (``parameters``) from the argument rows."""
    out: dict[str, Any] = {}
    for number, row in enumerate(filled_rows(form, "param"), start=1):
        name = row["name"].strip()
        where = f"Arguments, row {number}" + (f" ({name})" if name else "")
        if not name:
            raise _fail("parameters", f"{where}: the name is empty")
        if name in out:
            raise _fail("parameters", f"{where}: {name!r} is already an argument")
        out[name] = _parameter(row, where)
    return out


def _form_field(row: Row, where: str) -> dict[str, Any]:
    kind = row["type"] or "text"
    if kind not in FIELD_TYPES:
        raise _fail("fields", f"{where}: type must be one of {', '.join(FIELD_TYPES)}")
    out: dict[str, Any] = {"name": row["name"].strip(), "type": kind}
    for key in ("label", "pattern", "maps_to"):
        if row[key].strip():
            out[key] = row[key].strip()
    if row["required"] == "on":
        out["required"] = True
    if _split(row["options"]):
        out["options"] = _split(row["options"])
    return out


def form_fields_of(form: Mapping[str, str]) -> list[dict[str, Any]]:
    """A form action's fields from the field rows."""
    out: list[dict[str, Any]] = []
    for number, row in enumerate(filled_rows(form, "field"), start=1):
        where = f"Fields, row {number}"
        if not row["name"].strip():
            raise _fail("fields", f"{where}: the name is empty")
        out.append(_form_field(row, where))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def pair_rows(values: Mapping[str, Any]) -> list[Row]:
    """A stored map (headers, query) as name/value rows."""
    return [{"name": str(k), "value": _text(v)} for k, v in values.items()]


def parameter_rows(parameters: Mapping[str, Any]) -> list[Row]:
    """Stored ``parameters`` as argument rows."""
    return [
        {
            "name": str(name),
            "type": str(p.get("type", "string")),
            "description": str(p.get("description", "")),
            "required": "on" if p.get("required") else "",
            "enum": ", ".join(_text(v) for v in p.get("enum") or []),
        }
        for name, p in parameters.items()
        if isinstance(p, Mapping)
    ]


def field_rows(fields: list[Any]) -> list[Row]:
    """A stored form's ``fields`` as field rows."""
    return [
        {
            "name": str(f.get("name", "")),
            "label": str(f.get("label", "")),
            "type": str(f.get("type", "text")),
            "required": "on" if f.get("required") else "",
            "options": ", ".join(str(o) for o in f.get("options") or []),
            "pattern": str(f.get("pattern") or ""),
            "maps_to": str(f.get("maps_to") or ""),
        }
        for f in fields
        if isinstance(f, Mapping)
    ]
