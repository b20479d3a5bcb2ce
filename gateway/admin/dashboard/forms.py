"""The Create/Edit Action wizard's fields to a definition, and a definition back to them.

The request editors' fields (an HTTP action's, a form's submit, a button's request) are read
and filled by :mod:`.request_fields`; this module adds what only one kind has. Every parse
error is a :class:`~gateway.errors.RequestError` (422) whose ``param`` names the form field, so
the page can show it next to that field without losing what was typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.admin.dashboard.editors import (
    field_rows,
    form_fields_of,
    parameter_rows,
    parameters_of,
    rows_form,
)
from gateway.admin.dashboard.request_fields import (
    FormData,
    definition_text,
    invalid,
    kept_request,
    parse_json,
    parse_optional_request,
    parse_request,
    request_form,
)

__all__ = [
    "FormData",
    "definition_form",
    "definition_text",
    "merge_edit",
    "parse_definition",
    "parse_json",
]


def _statuses(text: str) -> int | list[int] | None:
    try:
        codes = [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        message = "Expected status: whole numbers such as 200, 204"
        raise invalid("health_expect_status", message) from None
    if not codes:
        return None
    return codes[0] if len(codes) == 1 else codes


def _health_check(form: FormData) -> dict[str, Any] | None:
    """The health check's fields; its sample values and limits stay in the raw definition."""
    if form.get("health_on") != "on":
        return None
    check: dict[str, Any] = {}
    if form.get("health_every", "").strip():
        check["every"] = form.get("health_every", "").strip()
    status = _statuses(form.get("health_expect_status", ""))
    if status is not None:
        check["expect_status"] = status
    if form.get("health_live") == "on":
        check["live"] = True
    return check


def _response(form: FormData) -> dict[str, Any]:
    response: dict[str, Any] = {}
    if form.get("response_select", "").strip():
        response["select"] = form.get("response_select", "").strip()
    if form.get("response_max_chars", "").strip():
        try:
            response["max_chars"] = int(form.get("response_max_chars", ""))
        except ValueError:
            raise invalid("response_max_chars", "Max characters: expected a number") from None
    return response


def _http(form: FormData) -> dict[str, Any]:
    request = parse_request(form)
    response = _response(form)
    if response:
        request["response"] = response
    return request


def _on_click(form: FormData) -> dict[str, Any]:
    navigate = form.get("button_navigate", "").strip()
    click = form.get("button_click", "")
    if click not in ("navigate", "http"):
        # A post from before the choice existed: a request only when no link is given.
        click = "http" if form.get("button_url", "").strip() and not navigate else "navigate"
    if click == "http":
        return {"http": parse_optional_request(form, "button_", wanted=True)}
    return {"navigate": navigate}


def _raw(form: FormData) -> dict[str, Any]:
    data = parse_json(form, "definition_json", "Raw definition")
    if not isinstance(data, dict):
        raise invalid("definition_json", "Raw definition: expected a JSON object of fields")
    return data


def parse_definition(form: FormData) -> dict[str, Any]:
    """The action definition (file format) described by the wizard's editors.

    With "Use the raw definition" ticked, the advanced view's JSON is the definition instead.
    """
    if form.get("use_raw") == "on":
        return _raw(form)
    kind = form.get("type", "http")
    data: dict[str, Any] = {"name": form.get("name", "").strip(), "type": kind}
    for key in ("description", "when_not_to_use"):
        if form.get(key, "").strip():
            data[key] = form.get(key, "").strip()
    if kind == "http":
        data.update(_http(form))
        parameters = parameters_of(form)
        if parameters:
            data["parameters"] = parameters
        health_check = _health_check(form)
        if health_check is not None:
            data["health_check"] = health_check
    elif kind == "form":
        data["title"] = form.get("form_title", "").strip()
        data["fields"] = form_fields_of(form)
        submit = parse_optional_request(form, "submit_", wanted=False)
        if submit is not None:
            data["submit"] = submit
    elif kind == "button":
        data["label"] = form.get("button_label", "").strip()
        data["on_click"] = _on_click(form)
    else:
        raise invalid("type", "choose HTTP Request, Form Collection or Button Trigger")
    return data


def _health_form(check: Mapping[str, Any]) -> dict[str, str]:
    status = check.get("expect_status")
    statuses = status if isinstance(status, list) else [] if status is None else [status]
    every = check.get("every", "")
    return {
        "health_on": "on",
        "health_every": f"{every:g}" if isinstance(every, int | float) else str(every),
        "health_expect_status": ", ".join(str(s) for s in statuses),
        "health_live": "on" if check.get("live") else "",
    }


def _http_form(definition: Mapping[str, Any]) -> dict[str, str]:
    response = definition.get("response") or {}
    form = request_form(definition) | {
        "response_select": str(response.get("select") or ""),
        "response_max_chars": str(response.get("max_chars") or ""),
    }
    form |= rows_form("param", parameter_rows(definition.get("parameters") or {}))
    if definition.get("health_check"):
        form |= _health_form(definition["health_check"])
    return form


def definition_form(definition: Mapping[str, Any]) -> dict[str, str]:
    """The wizard's fields for a stored (masked) definition: the inverse of parse_definition."""
    kind = str(definition.get("type", "http"))
    form = {
        "type": kind,
        "name": str(definition.get("name", "")),
        "description": str(definition.get("description", "")),
        "when_not_to_use": str(definition.get("when_not_to_use", "")),
    }
    if kind == "http":
        form |= _http_form(definition)
    elif kind == "form":
        form["form_title"] = str(definition.get("title", ""))
        form |= rows_form("field", field_rows(definition.get("fields") or []))
        if isinstance(definition.get("submit"), Mapping):
            form |= request_form(definition["submit"], "submit_")
    elif kind == "button":
        form["button_label"] = str(definition.get("label", ""))
        click = definition.get("on_click") or {}
        form["button_navigate"] = str(click.get("navigate") or "")
        form["button_click"] = "navigate"
        if isinstance(click.get("http"), Mapping):
            form |= request_form(click["http"], "button_") | {"button_click": "http"}
    return form


# Keys the wizard shows; an edit replaces them and keeps every other stored setting.
_WIZARD_KEYS = frozenset(
    {"name", "tool_name", "type", "description", "when_not_to_use", "method", "url"}
    | {"headers", "query", "body", "auth", "parameters", "title", "fields", "submit"}
    | {"label", "on_click", "response", "health_check"}
)
_NESTED = ("items", "properties")
"""Parts of an argument's schema the argument rows do not show (arrays' items, objects' fields)."""


def _kept_parameters(old: Any, new: Any) -> Any:
    """New ``parameters`` with each unchanged-type argument's nested schema kept from ``old``."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    out = {}
    for name, param in new.items():
        before = old.get(name)
        if (
            isinstance(before, Mapping)
            and isinstance(param, dict)
            and before.get("type", "string") == param.get("type", "string")
        ):
            param = {k: before[k] for k in _NESTED if k in before} | param
        out[name] = param
    return out


def _kept_part(old: Any, new: Any, shown: tuple[str, ...]) -> Any:
    """``new`` (a response spec, a health check) over what ``old`` had beyond ``shown``."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    return {k: v for k, v in old.items() if k not in shown} | new


def merge_edit(
    old: Mapping[str, Any], new: Mapping[str, Any], *, raw: bool = False
) -> dict[str, Any]:
    """An edited definition: the wizard's fields over the settings the wizard does not show.

    The type cannot change while editing, so the stored one wins over whatever was posted. A raw
    definition (the advanced view) shows every setting, so nothing beyond it is kept.
    """
    if raw:
        return {**new, "type": old.get("type", "http")}
    kept = {k: v for k, v in old.items() if k not in _WIZARD_KEYS}
    if new.get("method", old.get("method")) != old.get("method"):
        # Retries default by method (none for POST); a changed method gets its own default.
        kept.pop("retries", None)
    merged: dict[str, Any] = {**kept, **new, "type": old.get("type", "http")}
    if merged["type"] == "form" and "submit" in merged:
        merged["submit"] = kept_request(old.get("submit"), merged["submit"])
    click = merged.get("on_click")
    if merged["type"] == "button" and isinstance(click, dict) and "http" in click:
        stored = old.get("on_click")
        before = stored.get("http") if isinstance(stored, Mapping) else None
        merged["on_click"] = {**click, "http": kept_request(before, click["http"])}
    if merged["type"] != "http":
        return merged
    if "parameters" in merged:
        merged["parameters"] = _kept_parameters(old.get("parameters"), merged["parameters"])
    response = _kept_part(old.get("response"), new.get("response") or {}, ("select", "max_chars"))
    if response:
        merged["response"] = response
    if "health_check" in merged:
        merged["health_check"] = _kept_part(
            old.get("health_check"), merged["health_check"], ("every", "expect_status", "live")
        )
    return merged
