"""Turning what operators type into the dashboard's forms into definitions and test inputs.

Every parse error is a :class:`~gateway.errors.RequestError` (422) whose ``param`` names the form
field, so the page can show it next to that field without losing what was typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import RequestError

__all__ = [
    "FormData",
    "definition_form",
    "merge_edit",
    "parse_args",
    "parse_definition",
    "parse_json",
    "parse_lines",
    "parse_variables",
]

FormData = Mapping[str, str]


def _fail(param: str, message: str) -> RequestError:
    return RequestError(422, message, code="invalid_definition", param=param)


def parse_json(form: FormData, field: str, label: str) -> Any:
    """The JSON in one textarea, or None when it is blank."""
    text = form.get(field, "").strip()
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise _fail(field, f"{label}: not valid JSON ({e})") from None


def parse_lines(form: FormData, field: str, separator: str, label: str) -> dict[str, str]:
    """``Name: value`` (or ``name=value``) lines as a dict; blank lines are skipped."""
    out: dict[str, str] = {}
    for number, raw in enumerate(form.get(field, "").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        name, found, value = line.partition(separator)
        if not found or not name.strip():
            raise _fail(field, f"{label}: line {number} is not “name{separator} value”")
        out[name.strip()] = value.strip()
    return out


def parse_variables(form: FormData, field: str = "variables") -> dict[str, Any]:
    """``lead.email=jane@example.com`` lines as nested conversation variables."""
    out: dict[str, Any] = {}
    for name, value in parse_lines(form, field, "=", "Variables").items():
        head, dot, tail = name.partition(".")
        if dot:
            out.setdefault(head, {})[tail] = value
        else:
            out[name] = value
    return out


def parse_args(form: FormData, field: str = "args") -> dict[str, Any]:
    """The model arguments of a test (a JSON object)."""
    value = parse_json(form, field, "Arguments")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(field, "Arguments: expected a JSON object")
    return value


def _auth(form: FormData) -> dict[str, Any] | None:
    kind = form.get("auth_type", "none")
    get = form.get
    if kind == "bearer":
        return {"type": "bearer", "token": get("auth_token", "")}
    if kind == "basic":
        return {
            "type": "basic",
            "username": get("auth_username", ""),
            "password": get("auth_password", ""),
        }
    if kind == "api_key":
        return {
            "type": "api_key",
            "name": get("auth_name", ""),
            "in": get("auth_in", "header"),
            "value": get("auth_value", ""),
        }
    if kind == "oauth2_client_credentials":
        auth = {
            "type": kind,
            "token_url": get("auth_token_url", ""),
            "client_id": get("auth_client_id", ""),
            "client_secret": get("auth_client_secret", ""),
        }
        if get("auth_scope", "").strip():
            auth["scope"] = get("auth_scope", "").strip()
        return auth
    return None


def _http(form: FormData) -> dict[str, Any]:
    request: dict[str, Any] = {
        "method": form.get("method", "GET"),
        "url": form.get("url", "").strip(),
    }
    headers = parse_lines(form, "headers", ":", "Headers")
    if headers:
        request["headers"] = headers
    body = parse_json(form, "body", "Body")
    if body is not None:
        request["body"] = body
    auth = _auth(form)
    if auth is not None:
        request["auth"] = auth
    response: dict[str, Any] = {}
    if form.get("response_select", "").strip():
        response["select"] = form.get("response_select", "").strip()
    if form.get("response_max_chars", "").strip():
        try:
            response["max_chars"] = int(form.get("response_max_chars", ""))
        except ValueError:
            raise _fail("response_max_chars", "Max characters: expected a number") from None
    if response:
        request["response"] = response
    return request


def parse_definition(form: FormData) -> dict[str, Any]:
    """The action definition (file format) described by the Create Action wizard."""
    kind = form.get("type", "http")
    data: dict[str, Any] = {"name": form.get("name", "").strip(), "type": kind}
    for key in ("description", "when_not_to_use"):
        if form.get(key, "").strip():
            data[key] = form.get(key, "").strip()
    if kind == "http":
        data.update(_http(form))
        parameters = parse_json(form, "parameters", "Parameters")
        if parameters is not None:
            data["parameters"] = parameters
        health_check = parse_json(form, "health_check", "Health check")
        if health_check is not None:
            data["health_check"] = health_check
    elif kind == "form":
        data["title"] = form.get("form_title", "").strip()
        data["fields"] = parse_json(form, "form_fields", "Fields") or []
        submit = parse_json(form, "form_submit", "Submit request")
        if submit is not None:
            data["submit"] = submit
    elif kind == "button":
        data["label"] = form.get("button_label", "").strip()
        navigate = form.get("button_navigate", "").strip()
        http = parse_json(form, "button_http", "HTTP request")
        if http is not None and not navigate:
            data["on_click"] = {"http": http}
        else:
            data["on_click"] = {"navigate": navigate}
    else:
        raise _fail("type", "choose HTTP Request, Form Collection or Button Trigger")
    return data


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


_AUTH_FIELDS = frozenset(
    {"token", "username", "password", "name", "in", "value"}
    | {"token_url", "client_id", "client_secret", "scope"}
)


def _auth_form(auth: Mapping[str, Any]) -> dict[str, str]:
    out = {"auth_type": str(auth.get("type", "none"))}
    out |= {f"auth_{key}": str(value) for key, value in auth.items() if key in _AUTH_FIELDS}
    return out


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
        headers = definition.get("headers") or {}
        response = definition.get("response") or {}
        form |= {
            "method": str(definition.get("method", "GET")),
            "url": str(definition.get("url", "")),
            "headers": "\n".join(f"{k}: {v}" for k, v in headers.items()),
            "body": _json_text(definition["body"]) if "body" in definition else "",
            "parameters": _json_text(definition["parameters"])
            if definition.get("parameters")
            else "",
            "health_check": _json_text(definition["health_check"])
            if definition.get("health_check")
            else "",
            "response_select": str(response.get("select") or ""),
            "response_max_chars": str(response.get("max_chars") or ""),
        }
        form |= _auth_form(definition.get("auth") or {})
    elif kind == "form":
        form["form_title"] = str(definition.get("title", ""))
        form["form_fields"] = _json_text(definition.get("fields") or [])
        if definition.get("submit"):
            form["form_submit"] = _json_text(definition["submit"])
    elif kind == "button":
        form["button_label"] = str(definition.get("label", ""))
        click = definition.get("on_click") or {}
        if click.get("navigate"):
            form["button_navigate"] = str(click["navigate"])
        if click.get("http"):
            form["button_http"] = _json_text(click["http"])
    return form


# Keys the wizard shows; an edit replaces them and keeps every other stored setting.
_WIZARD_KEYS = frozenset(
    {
        "name",
        "tool_name",
        "type",
        "description",
        "when_not_to_use",
        "method",
        "url",
        "headers",
        "body",
        "auth",
        "parameters",
        "title",
        "fields",
        "submit",
        "label",
        "on_click",
        "response",
        "health_check",
    }
)


def merge_edit(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """An edited definition: the wizard's fields over the settings the wizard does not show.

    The type cannot change while editing, so the stored one wins over whatever was posted.
    """
    kept = {k: v for k, v in old.items() if k not in _WIZARD_KEYS}
    if new.get("method", old.get("method")) != old.get("method"):
        # Retries default by method (none for POST); a changed method gets its own default.
        kept.pop("retries", None)
    merged: dict[str, Any] = {**kept, **new, "type": old.get("type", "http")}
    old_response = old.get("response")
    if isinstance(old_response, dict) and merged["type"] == "http":
        rest = {k: v for k, v in old_response.items() if k not in ("select", "max_chars")}
        response = {**rest, **(new.get("response") or {})}
        if response:
            merged["response"] = response
    return merged
