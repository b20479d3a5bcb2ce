"""Turn an :class:`~gateway.definitions.actions.HttpRequest` and conversation values into a
concrete request.

The URL template is split *before* rendering into scheme+authority (fixed at save time), path and
query, so each variable is escaped for the part it lands in. Query-map entries and JSON body
leaves are rendered as data and encoded once. Required variables (URL, headers, auth, required
parameters) that are empty stop the request with :class:`~gateway.errors.MissingVariableError`;
optional ones drop their query entry or body leaf. A missing *secret* is not something the
customer can supply: it stops the request as a misconfigured action (:func:`missing_value`), and
the model is told so. A text body sent as JSON that does not parse after rendering is not sent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from gateway.definitions.actions import HttpRequest
from gateway.definitions.templating import (
    analyze,
    is_empty,
    lookup,
    render,
    split_outside_tags,
    split_url,
    to_text,
)
from gateway.errors import ExecutionRefused, HeaderValueError, MissingVariableError
from gateway.net.outbound import OutboundCall

__all__ = [
    "RenderedRequest",
    "body_variables",
    "check_header_value",
    "missing_value",
    "render_request",
    "required_variables",
]

_JSON_TYPES = ("application/json", "+json")
_FORM_TYPE = "application/x-www-form-urlencoded"
_MULTIPART_TYPE = "multipart/form-data"


@dataclass(slots=True)
class RenderedRequest:
    """A request ready to send (credentials not yet applied)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    body_text: str | None = None
    """The body as text, for logs (``None`` when there is no body)."""
    query: list[tuple[str, str]] = field(default_factory=list)
    """Extra query pairs added after rendering (already part of ``url``)."""

    def call(self, deadline: float, attempts: int = 1) -> OutboundCall:
        """The request as the outbound client sends it (credentials applied by then)."""
        return OutboundCall(self.method, self.url, self.headers, self.body, deadline, attempts)


def _vars(templates: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for t in templates:
        found |= analyze(t).variables
    return found


def required_variables(request: HttpRequest, required_args: Iterable[str] = ()) -> set[str]:
    """Variables without which the request must not be sent (URL, headers, auth, required args)."""
    templates = [request.url, *request.headers.values(), *request.headers.keys()]
    auth = request.auth
    if auth is not None:
        # Field by field rather than model_dump(): this runs on every execution.
        for name in type(auth).model_fields:
            value = getattr(auth, name)
            if isinstance(value, str) and name != "type":
                templates.append(value)
            elif isinstance(value, dict):
                templates += [v for v in value.values() if isinstance(v, str)]
    return _vars(templates) | {f"args.{a}" for a in required_args}


def body_variables(body: Any) -> set[str]:
    """Every variable referenced in a body (string or JSON value)."""
    found: set[str] = set()
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            found |= analyze(node).variables
        elif isinstance(node, dict):
            stack.extend(node.values())
            found |= _vars(k for k in node if isinstance(k, str))
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _missing(variables: Iterable[str], values: Mapping[str, Any]) -> list[str]:
    return sorted(v for v in variables if is_empty(lookup(values, v)))


def missing_value(variable: str) -> ExecutionRefused:
    """The error for a required value that is missing: a secret is a configuration problem."""
    namespace, _, name = variable.partition(".")
    if namespace == "secrets":
        return ExecutionRefused(
            f"this action is misconfigured: its secret {name!r} is not set in the gateway. "
            "This is not something the customer can provide; do not ask them for it, tell them "
            "the action is unavailable right now"
        )
    return MissingVariableError(variable)


def _check_required(variables: Iterable[str], values: Mapping[str, Any]) -> None:
    missing = _missing(variables, values)
    if missing:
        # Secrets first: asking the customer for any other value would not help.
        raise missing_value(min(missing, key=lambda v: not v.startswith("secrets.")))


def _render_leaf(leaf: str, values: Mapping[str, Any], required: set[str]) -> tuple[bool, Any]:
    """Render one JSON string leaf; ``(False, None)`` means "leave it out"."""
    info = analyze(leaf)
    if info.is_static:
        return True, leaf
    missing = _missing(info.variables, values)
    if missing:
        needed = [m for m in missing if m in required]
        if needed:
            raise missing_value(needed[0])
        return False, None
    if info.single is not None:
        # ``"{{ args.quantity }}"`` keeps the argument's JSON type (a number stays a number).
        return True, lookup(values, info.single)
    return True, render(leaf, values, "raw")


def _render_json(node: Any, values: Mapping[str, Any], required: set[str]) -> tuple[bool, Any]:
    if isinstance(node, str):
        return _render_leaf(node, values, required)
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, child in node.items():
            keep, value = _render_json(child, values, required)
            if keep:
                out[key] = value
        return True, out
    if isinstance(node, list):
        items = []
        for child in node:
            keep, value = _render_json(child, values, required)
            if keep:
                items.append(value)
        return True, items
    return True, node


def check_header_value(name: str, value: str) -> str:
    """Refuse a rendered header value that is not ASCII; return it unchanged otherwise.

    HTTP gives non-ASCII header bytes no meaning (RFC 9110 §5.5: obs-text), so servers and
    proxies read them as Latin-1, UTF-8 or reject them, each differently. Percent- or RFC 8187
    encoding would not help: no API decodes an arbitrary header, and ``Jos%C3%A9`` would be
    indistinguishable from a value that really is ``Jos%C3%A9``. The model is told which header.

    Raises:
        HeaderValueError: the value has a character outside ASCII.
    """
    if not value.isascii():
        raise HeaderValueError(
            name,
            "value contains non-ASCII characters, which the gateway does not send in headers "
            "(the action could pass this value in the query or the body instead)",
        )
    return value


def _render_headers(templates: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, template in templates.items():
        try:
            value = render(template, values, "header")
        except HeaderValueError as e:
            raise HeaderValueError(name, str(e).split(": ", 1)[-1]) from None
        headers[name] = check_header_value(name, value)
    return headers


def _content_type(headers: Mapping[str, str]) -> str:
    for name, value in headers.items():
        if name.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return ""


def render_request(
    request: HttpRequest,
    values: Mapping[str, Any],
    *,
    required_args: Iterable[str] = (),
) -> RenderedRequest:
    """Render a request template with every value escaped for where it lands.

    Args:
        request: the request definition (an action, a form's submit or a button's click).
        values: namespaces of the conversation (``lead``, ``args``, ``secrets``, ...).
        required_args: names of required parameters (missing ones stop the request).

    Raises:
        MissingVariableError: a required variable is missing or empty.
        HeaderValueError: a header would get an unsafe value.
        ExecutionRefused: a value cannot be used where it lands (e.g. ``..`` as a path segment).
    """
    required = required_variables(request, required_args)
    _check_required(required, values)

    scheme, authority, path, query, _fragment = split_url(request.url)
    url = f"{scheme}://{authority}{render(path, values, 'path') if path else ''}"
    pairs: list[str] = []
    if query:
        for pair in split_outside_tags(query, "&"):
            key, *value = split_outside_tags(pair, "=", 1)
            rendered = render(key, values, "query")
            if value:
                rendered += "=" + render(value[0], values, "query")
            pairs.append(rendered)
    extra: list[tuple[str, str]] = []
    for key, template in request.query.items():
        info = analyze(template)
        missing = _missing(info.variables, values)
        if missing:
            needed = [m for m in missing if m in required]
            if needed:
                raise missing_value(needed[0])
            continue
        single = lookup(values, info.single) if info.single is not None else None
        # A list as the whole value: one pair per item (``tag=a&tag=b``, OpenAPI's exploded
        # form style); anything else is one pair.
        texts = [to_text(v) for v in single] if isinstance(single, list) else None
        for text in texts if texts is not None else [render(template, values, "raw")]:
            extra.append((key, text))
            pairs.append(f"{quote(key, safe='')}={quote(text, safe='')}")
    if pairs:
        url += "?" + "&".join(pairs)

    headers = _render_headers(request.headers, values)
    body: bytes | None = None
    body_text: str | None = None
    ctype = _content_type(headers)
    if isinstance(request.body, str):
        info = analyze(request.body)
        _check_required(info.variables, values)
        if ctype == _FORM_TYPE:
            body_text = render(request.body, values, "query")
        elif ctype.endswith(_JSON_TYPES):
            # A JSON document written as a string: values go in as JSON string content.
            body_text = _render_json_text(request.body, values)
            _check_json(body_text, ctype)
        else:
            body_text = render(request.body, values, "raw")
    elif request.body is not None:
        _, data = _render_json(request.body, values, required)
        body_text = _structured_body(data, ctype, headers)
    if body_text is not None:
        body = body_text.encode("utf-8")
    return RenderedRequest(request.method, url, headers, body, body_text, extra)


def _structured_body(data: Any, ctype: str, headers: dict[str, str]) -> str:
    """A rendered object or list as the body its ``Content-Type`` asks for (JSON by default).

    Values the model left out are already out of ``data``, so they stay out of every form.
    """
    if ctype == _FORM_TYPE:
        return form_encode(data)
    if ctype == _MULTIPART_TYPE:
        boundary = f"actiongate-{uuid.uuid4().hex}"
        for name in [k for k in headers if k.lower() == "content-type"]:
            del headers[name]
        headers["Content-Type"] = f"{_MULTIPART_TYPE}; boundary={boundary}"
        return multipart_encode(data, boundary)
    if not ctype:
        headers["Content-Type"] = "application/json"
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _form_pairs(key: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for name, child in value.items():
            yield from _form_pairs(f"{key}[{name}]" if key else str(name), child)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _form_pairs(f"{key}[{index}]", child)
    elif isinstance(value, bool):
        yield key, "true" if value else "false"
    elif value is not None:
        yield key, to_text(value)


def form_encode(data: Any) -> str:
    """A rendered object as ``application/x-www-form-urlencoded``, nested values with the
    bracket encoding form APIs read: ``metadata[order_id]=7``, ``items[0][price]=p_1``."""
    return "&".join(
        f"{quote(key, safe='[]')}={quote_plus(text)}" for key, text in _form_pairs("", data)
    )


def multipart_encode(data: Any, boundary: str) -> str:
    """A rendered object as ``multipart/form-data`` text parts (nested names in brackets).

    Field names are the definition's; a value's quotes and line breaks cannot end its part,
    since the boundary is a fresh random token per request.
    """
    parts = []
    for key, text in _form_pairs("", data):
        # As browsers do (WHATWG): a name cannot break out of its quotes or its header line,
        # even a key the model put in an object value.
        name = key.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{text}\r\n'
        )
    return "".join(parts) + f"--{boundary}--\r\n"


def _check_json(text: str, ctype: str) -> None:
    """Never send a body under a JSON content type that is not JSON (the API would guess)."""
    try:
        json.loads(text)
    except json.JSONDecodeError:
        raise ExecutionRefused(
            f"the request body is not valid JSON once its values are filled in, so it was not "
            f"sent as {ctype}; a value may be of the wrong type for where the action places it"
        ) from None


def _render_json_text(source: str, values: Mapping[str, Any]) -> str:
    """Render a JSON document given as text, inserting each value as JSON string content."""
    info = analyze(source)
    if info.single is not None:
        # The whole body is one value (``"{{ args.body }}"``): send it as JSON, not as a string.
        return json.dumps(lookup(values, info.single), ensure_ascii=False, separators=(",", ":"))
    escaped = {
        ns: {k: json.dumps(to_text(v), ensure_ascii=False)[1:-1] for k, v in scope.items()}
        if isinstance(scope, Mapping)
        else scope
        for ns, scope in values.items()
    }
    return render(source, escaped, "raw")
