"""The Create/Edit Action wizard's fields to a definition, and a definition back to them.

Every parse error is a :class:`~gateway.errors.RequestError` (422) whose ``param`` names the form
field, so the page can show it next to that field without losing what was typed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, get_args

import orjson

from gateway.admin.dashboard.editors import (
    REQUEST_EDITORS,
    field_rows,
    form_fields_of,
    pair_rows,
    pairs_of,
    parameter_rows,
    parameters_of,
    rows_form,
)
from gateway.definitions.actions import Method
from gateway.errors import RequestError

__all__ = [
    "FormData",
    "definition_form",
    "definition_text",
    "editor_field",
    "merge_edit",
    "parse_definition",
    "parse_json",
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


def _named(owner: str, title: str) -> str:
    """One editor's label for a part of its request: "Headers", or "Submit request headers"."""
    if not owner:
        return title
    return f"{owner} {title if title[:2].isupper() else title.lower()}"


def _auth(form: FormData, prefix: str = "", owner: str = "") -> dict[str, Any] | None:
    """The Credentials step's fields (``auth_*``, or one request editor's ``submit_auth_*``)."""
    kind = form.get(f"{prefix}auth_type", "none")

    def get(key: str, default: str = "") -> str:
        return form.get(f"{prefix}auth_{key}", default)

    if kind == "bearer":
        return {"type": "bearer", "token": get("token")}
    if kind == "basic":
        return {"type": "basic", "username": get("username"), "password": get("password")}
    if kind == "api_key":
        return {
            "type": "api_key",
            "name": get("name"),
            "in": get("in", "header"),
            "value": get("value"),
        }
    if kind in ("oauth2_client_credentials", "oauth2_refresh_token"):
        auth = {"type": kind, "token_url": get("token_url"), "client_id": get("client_id")}
        secret = get("client_secret")
        if secret.strip() or kind == "oauth2_client_credentials":
            auth["client_secret"] = secret  # a refresh-token app may be a public client
        if kind == "oauth2_refresh_token":
            auth["refresh_token"] = get("refresh_token").strip()
        if get("scope").strip():
            auth["scope"] = get("scope").strip()
        return auth
    if kind == "headers":
        headers = pairs_of(
            form, f"{prefix}authheader", f"{prefix}auth", _named(owner, "Auth headers")
        )
        return {"type": "headers", "headers": headers}
    return None


def _statuses(text: str) -> int | list[int] | None:
    try:
        codes = [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        message = "Expected status: whole numbers such as 200, 204"
        raise _fail("health_expect_status", message) from None
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
            raise _fail("response_max_chars", "Max characters: expected a number") from None
    return response


METHODS: tuple[str, ...] = get_args(Method)
_WEB_URL = re.compile(r"^https?://", re.IGNORECASE)


def _request(form: FormData, prefix: str = "", owner: str = "") -> dict[str, Any]:
    """One request editor's fields (the HTTP action's, or a prefixed one) as a request."""
    method = form.get(f"{prefix}method", "GET")
    if method not in METHODS:
        message = f"{_named(owner, 'Method')}: {method!r} is not one of {', '.join(METHODS)}"
        raise _fail(f"{prefix}method", message)
    url = form.get(f"{prefix}url", "").strip()
    if url and not _WEB_URL.match(url):
        message = f"{_named(owner, 'URL')}: {url!r} does not start with http:// or https://"
        raise _fail(f"{prefix}url", message)
    request: dict[str, Any] = {"method": method, "url": url}
    for key, kind, title in (("headers", "header", "Headers"), ("query", "query", "Query")):
        pairs = pairs_of(form, f"{prefix}{kind}", f"{prefix}{key}", _named(owner, title))
        if pairs:
            request[key] = pairs
    body = parse_json(form, f"{prefix}body", _named(owner, "Body"))
    if body is not None:
        request["body"] = body
    auth = _auth(form, prefix, owner)
    if auth is not None:
        request["auth"] = auth
    return request


def _http(form: FormData) -> dict[str, Any]:
    request = _request(form)
    response = _response(form)
    if response:
        request["response"] = response
    return request


def _optional_request(form: FormData, prefix: str, *, wanted: bool) -> dict[str, Any] | None:
    """A prefixed editor's request, or None when it is not ``wanted`` and nothing is filled in.

    A request with anything filled in needs its URL, so a forgotten one is named rather than
    the whole request silently left out.
    """
    owner = REQUEST_EDITORS[prefix]
    request = _request(form, prefix, owner)
    if not wanted and set(request) <= {"method", "url"} and not request["url"]:
        return None
    if not request["url"]:
        raise _fail(f"{prefix}url", f"{_named(owner, 'URL')}: the URL is empty")
    return request


def _on_click(form: FormData) -> dict[str, Any]:
    navigate = form.get("button_navigate", "").strip()
    click = form.get("button_click", "")
    if click not in ("navigate", "http"):
        # A post from before the choice existed: a request only when no link is given.
        click = "http" if form.get("button_url", "").strip() and not navigate else "navigate"
    if click == "http":
        return {"http": _optional_request(form, "button_", wanted=True)}
    return {"navigate": navigate}


def _raw(form: FormData) -> dict[str, Any]:
    data = parse_json(form, "definition_json", "Raw definition")
    if not isinstance(data, dict):
        raise _fail("definition_json", "Raw definition: expected a JSON object of fields")
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
        submit = _optional_request(form, "submit_", wanted=False)
        if submit is not None:
            data["submit"] = submit
    elif kind == "button":
        data["label"] = form.get("button_label", "").strip()
        data["on_click"] = _on_click(form)
    else:
        raise _fail("type", "choose HTTP Request, Form Collection or Button Trigger")
    return data


def definition_text(value: Any) -> str:
    """A definition (or part of one) as the indented JSON the advanced view shows."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


_AUTH_FIELDS = frozenset(
    {"token", "username", "password", "name", "in", "value"}
    | {"token_url", "client_id", "client_secret", "scope", "refresh_token"}
)


def _auth_form(auth: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out = {f"{prefix}auth_type": str(auth.get("type", "none"))}
    out |= {f"{prefix}auth_{k}": str(v) for k, v in auth.items() if k in _AUTH_FIELDS}
    if isinstance(auth.get("headers"), Mapping):
        out |= rows_form(f"{prefix}authheader", pair_rows(auth["headers"]))
    return out


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


def _request_form(request: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """One request editor's fields for a stored request: the inverse of :func:`_request`."""
    form = {
        f"{prefix}method": str(request.get("method", "GET")),
        f"{prefix}url": str(request.get("url", "")),
        f"{prefix}body": definition_text(request["body"]) if "body" in request else "",
    }
    form |= rows_form(f"{prefix}header", pair_rows(request.get("headers") or {}))
    form |= rows_form(f"{prefix}query", pair_rows(request.get("query") or {}))
    return form | _auth_form(request.get("auth") or {}, prefix)


def _http_form(definition: Mapping[str, Any]) -> dict[str, str]:
    response = definition.get("response") or {}
    form = _request_form(definition) | {
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
            form |= _request_form(definition["submit"], "submit_")
    elif kind == "button":
        form["button_label"] = str(definition.get("label", ""))
        click = definition.get("on_click") or {}
        form["button_navigate"] = str(click.get("navigate") or "")
        form["button_click"] = "navigate"
        if isinstance(click.get("http"), Mapping):
            form |= _request_form(click["http"], "button_") | {"button_click": "http"}
    return form


def editor_field(param: str | None) -> str | None:
    """The wizard field an error's ``param`` is about: itself, or a request editor's field.

    Saving names a definition path (``submit.url``, ``on_click.http.headers.X-Key``); the page
    shows that error at the prefixed editor's field (``submit_url``, ``button_headers``).
    """
    if not param:
        return None
    parts = [p for p in param.split(".") if p not in ("HttpClick", "NavigateClick")]
    if parts[0] == "submit" and len(parts) > 1:
        return f"submit_{parts[1]}"
    if parts[:2] == ["on_click", "http"] and len(parts) > 2:
        return f"button_{parts[2]}"
    if parts[:2] == ["on_click", "navigate"]:
        return "button_navigate"
    return parts[0]


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


_REQUEST_KEYS = ("method", "url", "headers", "query", "body", "auth")
"""Parts of a form's submit or a button's request its editor shows."""


def _kept_request(old: Any, new: Any) -> Any:
    """A request editor's request over what the stored one had beyond the editor's fields.

    Its timeout, retries, response trimming and trace setting stay in the raw definition.
    """
    if not isinstance(old, Mapping) or not isinstance(new, dict):
        return new
    kept = {k: v for k, v in old.items() if k not in _REQUEST_KEYS}
    if new.get("method", "GET") != old.get("method", "GET"):
        kept.pop("retries", None)  # as for an HTTP action: the new method's default applies
    return kept | new


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
        merged["submit"] = _kept_request(old.get("submit"), merged["submit"])
    click = merged.get("on_click")
    if merged["type"] == "button" and isinstance(click, dict) and "http" in click:
        stored = old.get("on_click")
        before = stored.get("http") if isinstance(stored, Mapping) else None
        merged["on_click"] = {**click, "http": _kept_request(before, click["http"])}
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
