"""One request editor's fields to an HTTP request, and a stored request back to them.

The wizard has three request editors with the same fields (method, URL, query and header rows,
body, credentials): the HTTP action's, unprefixed (``url``, ``auth_type``), and, prefixed, a
form's submit request and a button's request (``submit_url``, ``button_auth_type``; see
:data:`~gateway.admin.dashboard.editors.REQUEST_EDITORS`). Parse errors are
:class:`~gateway.errors.RequestError` (422) whose ``param`` names the editor's field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, get_args

import orjson

from gateway.admin.dashboard.editors import REQUEST_EDITORS, pair_rows, pairs_of, rows_form
from gateway.definitions.actions import Method
from gateway.errors import RequestError

__all__ = [
    "METHODS",
    "FormData",
    "definition_text",
    "editor_field",
    "invalid",
    "kept_request",
    "parse_json",
    "parse_optional_request",
    "parse_request",
    "request_form",
]

FormData = Mapping[str, str]


def invalid(param: str, message: str) -> RequestError:
    """The 422 for a wizard field: ``param`` names the form field the page shows it next to."""
    return RequestError(422, message, code="invalid_definition", param=param)


def parse_json(form: FormData, field: str, label: str) -> Any:
    """The JSON in one textarea, or None when it is blank."""
    text = form.get(field, "").strip()
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise invalid(field, f"{label}: not valid JSON ({e})") from None


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


METHODS: tuple[str, ...] = get_args(Method)
_WEB_URL = re.compile(r"^https?://", re.IGNORECASE)


def parse_request(form: FormData, prefix: str = "", owner: str = "") -> dict[str, Any]:
    """One request editor's fields (the HTTP action's, or a prefixed one) as a request."""
    method = form.get(f"{prefix}method", "GET")
    if method not in METHODS:
        message = f"{_named(owner, 'Method')}: {method!r} is not one of {', '.join(METHODS)}"
        raise invalid(f"{prefix}method", message)
    url = form.get(f"{prefix}url", "").strip()
    if url and not _WEB_URL.match(url):
        message = f"{_named(owner, 'URL')}: {url!r} does not start with http:// or https://"
        raise invalid(f"{prefix}url", message)
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


def parse_optional_request(form: FormData, prefix: str, *, wanted: bool) -> dict[str, Any] | None:
    """A prefixed editor's request, or None when it is not ``wanted`` and nothing is filled in.

    A request with anything filled in needs its URL, so a forgotten one is named rather than
    the whole request silently left out.
    """
    owner = REQUEST_EDITORS[prefix]
    request = parse_request(form, prefix, owner)
    if not wanted and set(request) <= {"method", "url"} and not request["url"]:
        return None
    if not request["url"]:
        raise invalid(f"{prefix}url", f"{_named(owner, 'URL')}: the URL is empty")
    return request


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


def request_form(request: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """One request editor's fields for a stored request: the inverse of :func:`parse_request`."""
    form = {
        f"{prefix}method": str(request.get("method", "GET")),
        f"{prefix}url": str(request.get("url", "")),
        f"{prefix}body": definition_text(request["body"]) if "body" in request else "",
    }
    form |= rows_form(f"{prefix}header", pair_rows(request.get("headers") or {}))
    form |= rows_form(f"{prefix}query", pair_rows(request.get("query") or {}))
    return form | _auth_form(request.get("auth") or {}, prefix)


_REQUEST_KEYS = ("method", "url", "headers", "query", "body", "auth")
"""Parts of a form's submit or a button's request its editor shows."""


def kept_request(old: Any, new: Any) -> Any:
    """A request editor's request over what the stored one had beyond the editor's fields.

    Its timeout, retries, response trimming and trace setting stay in the raw definition.
    """
    if not isinstance(old, Mapping) or not isinstance(new, dict):
        return new
    kept = {k: v for k, v in old.items() if k not in _REQUEST_KEYS}
    if new.get("method", "GET") != old.get("method", "GET"):
        kept.pop("retries", None)  # as for an HTTP action: the new method's default applies
    return kept | new


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
