"""Import HTTP actions from an OpenAPI 3.0 or 3.1 document (``actiongate import-openapi``).

:func:`import_openapi` reads a spec (JSON or YAML, a file or an http(s) URL fetched through the
gateway's egress guard) and maps each operation to one ``http`` action:

- path parameters become ``{{args.NAME}}`` in the URL path, required query parameters go in the
  URL's query string, optional ones in ``query:`` (left out when the model gives no value),
  required header parameters in ``headers:``;
- an object request body becomes one parameter per field (nested objects as parameters with
  ``properties``) and a ``body`` whose leaves are ``{{args.FIELD}}`` — JSON, form-encoded or
  multipart as the spec says; any other body becomes a single ``body`` parameter
  (``body: "{{args.body}}"``, its schema sketched in the description);
- the operation's security requirement becomes ``auth`` with ``{{secrets.NAME}}`` references,
  NAME upper-snake from the scheme name (``PetstoreAuth`` -> ``PETSTORE_AUTH``, plus
  ``_USERNAME``/``_PASSWORD`` for basic and ``_CLIENT_ID``/``_CLIENT_SECRET`` for OAuth 2).

Every action is validated with :func:`gateway.definitions.config.parse_config` before it is
returned; an operation that cannot be mapped, or whose action would not validate, is listed in
:attr:`ImportResult.skipped` with the reason, and anything left out of an imported action (an
optional cookie or header parameter, say) in :attr:`ImportResult.notes`. Nothing is dropped
silently.

Choices:

- ``when_not_to_use`` is left empty, with a ``# TODO`` comment in the YAML: only the operator
  knows when the model must not call an API, and a made-up guardrail would read as a real one.
- Without ``servers`` the OpenAPI default ``/`` applies, so a spec fetched from a URL (FastAPI's
  ``/openapi.json``) targets that host; a relative server URL in a spec read from a file is an
  error asking for ``--base-url``.
- Optional header parameters are left out (the gateway treats every header variable as
  required); query arrays go comma-separated (``explode: false``) or one pair per item
  (``style: form``, exploded, OpenAPI's default).
- A generic body is ``body: "{{args.body}}"`` with the spec's ``Content-Type``: the whole body
  is the model's value, serialised as JSON for a JSON media type (an object or array value needs
  the renderer to serialise a lone ``{{args.body}}`` as JSON; see
  ``tests/test_openapi_import.py::test_generic_json_body_is_sent_as_json``). It is declared
  required, since the gateway refuses a string body with a missing variable.
- Secrets are named per scheme and listed in ``secrets:`` as ``${NAME}``, only for schemes an
  imported action uses; ``Authorization``/``Accept``/``Content-Type`` header parameters are
  ignored, as OpenAPI says.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from gateway.definitions.config import parse_config
from gateway.errors import ConfigError
from gateway.importers.openapi_bodies import ActionParts, add_body, arg
from gateway.importers.openapi_fetch import (
    MAX_SPEC_BYTES,
    OpenAPIImportError,
    fetch_url,
    parse_document,
)
from gateway.importers.openapi_report import ImportResult
from gateway.importers.openapi_schema import (
    SCALARS,
    Resolver,
    SchemaError,
    as_dict,
    clean_text,
    code_flow_token_url,
    scheme_auth,
    to_parameter,
    upper_snake,
)

__all__ = [
    "MAX_SPEC_BYTES",
    "ImportResult",
    "OpenAPIImportError",
    "fetch_url",
    "import_openapi",
    "tool_name",
]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_ALL_METHODS = frozenset(
    {"get", "put", "post", "delete", "options", "head", "patch", "trace", "query"}
)
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"

Fetch = Callable[[str], bytes]


@dataclass(frozen=True)
class Selection:
    """Which operations to import: all, or those the selectors name."""

    operations: Sequence[str] = ()
    """operationIds, ``METHOD /path``, tool names, or globs on them (``*customer*``)."""
    tags: Sequence[str] = ()
    path_prefixes: Sequence[str] = ()

    def keeps(self, path: str, op: dict[str, Any]) -> bool:
        """Whether the tag and path filters let this operation through."""
        if self.tags and not set(self.tags) & set(_tags(op)):
            return False
        return not self.path_prefixes or any(path.startswith(p) for p in self.path_prefixes)


def _tags(op: dict[str, Any]) -> list[str]:
    tags = op.get("tags")
    return [str(t) for t in tags] if isinstance(tags, list) else []


def import_openapi(
    source: str,
    *,
    base_url: str | None = None,
    operations: Sequence[str] = (),
    fetch: Fetch | None = None,
    selection: Selection | None = None,
    pins: Mapping[str, str] | None = None,
    refresh_tokens: bool = False,
) -> ImportResult:
    """Map the operations of an OpenAPI 3.x document to validated ``http`` actions.

    Args:
        source: A file path, or an http(s) URL fetched with ``fetch``.
        base_url: Overrides the spec's ``servers``.
        operations: Only these operationIds (or ``"METHOD /path"``, tool names, globs); empty
            means all.
        fetch: Downloads a URL; default :func:`fetch_url` (egress guard, no exemptions).
        selection: Tags, path prefixes and selectors (``operations`` is its shorthand).
        pins: ``--set``: path, query and header parameters by name with the value (a literal
            or a template) every imported action sends, instead of a model argument.
        refresh_tokens: ``--refresh-token``: OAuth2 authorization-code schemes refresh their
            access token from a stored refresh token instead of sending a bearer secret.

    Raises:
        OpenAPIImportError: unreadable or non-3.x spec, unknown operation, no usable base URL.
    """
    is_url = source.lower().startswith(("http://", "https://"))
    if is_url:
        try:
            raw = (fetch or fetch_url)(source)
        except OSError as e:
            raise OpenAPIImportError(f"cannot fetch {source}: {e}") from None
    else:
        try:
            raw = Path(source).read_bytes()
        except OSError as e:
            raise OpenAPIImportError(f"{source}: cannot read file: {e.strerror}") from None
    document = parse_document(raw, source)
    importer = _Importer(
        document,
        spec_url=source if is_url else None,
        base_url=base_url,
        pins=dict(pins or {}),
        refresh_tokens=refresh_tokens,
    )
    return importer.run(selection or Selection(operations=operations), source)


def tool_name(operation_id: str) -> str:
    """A tool name from an operationId: ``listPets`` -> ``list_pets``.

    Longer than 64 characters, it is cut at the last word boundary that leaves room for
    ``_`` and a 6-character hash of the whole name, so two long names that share a beginning
    stay apart and no word is cut in the middle.
    """
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", operation_id).lower()
    text = re.sub(r"[^a-z0-9-]+", "_", text).strip("_-")
    if len(text) <= 64:
        return text or "operation"
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    head = text[: 64 - 7]
    cut = head.rfind("_")
    head = head[:cut] if cut > 0 else head
    return f"{head.rstrip('_-')}_{digest}"


def _selected(wanted: Sequence[str], label: str, method: str, path: str) -> str | None:
    """The selector in ``wanted`` naming this operation (its id, ``METHOD /path``, its tool
    name, or a glob on either), or None."""
    names = (label, f"{method.upper()} {path}", tool_name(label))
    for selector in wanted:
        if any(fnmatch.fnmatchcase(name, selector) for name in names):
            return selector
    return None


class _Importer:
    """Maps the operations of one document."""

    def __init__(
        self,
        document: dict[str, Any],
        *,
        spec_url: str | None,
        base_url: str | None,
        pins: dict[str, str] | None = None,
        refresh_tokens: bool = False,
    ):
        self.document = document
        self.refresh_tokens = refresh_tokens
        self.code_flows: dict[str, str] = {}
        """Authorization-code schemes used by imported actions: secret name -> token URL."""
        self.pins = dict(pins or {})
        self.resolver = Resolver(document)
        self.spec_url = spec_url
        self.base_url = base_url
        self.schemes = as_dict(as_dict(document.get("components")).get("securitySchemes"))
        self.secret_names: dict[str, str] = {}
        for scheme in self.schemes:
            name, n = upper_snake(scheme), 2
            while name in self.secret_names.values():
                name, n = f"{upper_snake(scheme)}_{n}", n + 1
            self.secret_names[scheme] = name
        self.tool_names: set[str] = set()
        self.broken: list[tuple[str, str]] = []

    def run(self, selection: Selection, source: str) -> ImportResult:
        found = [f for f in self._operations() if selection.keeps(f[2], f[4])]
        wanted = selection.operations
        used = {_selected(wanted, label, m, p) for label, m, p, *_ in found}
        unknown = [w for w in wanted if w not in used]
        if unknown:
            known = ", ".join(sorted(label for label, *_ in found)[:20]) or "none"
            raise OpenAPIImportError(f"unknown operation {unknown[0]!r} (operations: {known})")
        result = ImportResult({"secrets": {}, "actions": []}, list(self.broken), source=source)
        result.webhooks = len(as_dict(self.document.get("webhooks")))
        secrets: dict[str, str] = result.config["secrets"]
        for label, method, path, item, op in found:
            if wanted and _selected(wanted, label, method, path) is None:
                continue
            result.seen.append((label, method.upper(), path, _tags(op)))
            if method.upper() not in METHODS:
                why = f"method {method.upper()} is not supported ({', '.join(METHODS)} only)"
                result.skipped.append((label, why))
                continue
            try:
                action, draft = self._action(method.upper(), path, item, op)
                needed = {s: f"${{{s}}}" for s in draft.secrets}
                parse_config({"actions": [action], "secrets": needed}, environ={})
            except OpenAPIImportError:
                raise  # the whole spec is unusable (no base URL), not this operation
            except (SchemaError, ConfigError) as e:
                result.skipped.append((label, str(e)))
                continue
            self.tool_names.add(action["tool_name"])
            result.tools[label] = action["tool_name"]
            result.config["actions"].append(action)
            secrets.update((s, v) for s, v in needed.items() if s not in secrets)
            result.notes += [(label, note) for note in draft.notes]
        parse_config(result.config, environ={})  # the whole file: unique tool names
        result.code_flows = {
            name: url
            for name, url in self.code_flows.items()
            if name in secrets or f"{name}_REFRESH_TOKEN" in secrets
        }
        result.refresh_tokens = self.refresh_tokens
        return result

    def _operations(self) -> Any:
        for path, raw_item in as_dict(self.document.get("paths")).items():
            try:
                item = self.resolver.deref(raw_item)
            except SchemaError as e:
                self.broken.append((f"path {path}", str(e)))
                continue
            for method, op in item.items():
                if method.lower() in _ALL_METHODS and isinstance(op, dict):
                    op_id = op.get("operationId")
                    label = (
                        op_id if isinstance(op_id, str) and op_id else f"{method.upper()} {path}"
                    )
                    yield label, method.lower(), path, item, op

    # --- one operation ----------------------------------------------------------------------

    def _action(
        self, method: str, path: str, item: dict[str, Any], op: dict[str, Any]
    ) -> tuple[dict[str, Any], ActionParts]:
        draft = ActionParts()
        base = self._base_url(op, item)
        auth = self._auth(op, base, draft)
        for param in self._parameters(item, op):
            self._parameter(param, draft)
        if op.get("requestBody") is not None:
            add_body(self.resolver, self.resolver.deref(op["requestBody"]), draft)
        summary, details = clean_text(op.get("summary")), clean_text(op.get("description"))
        op_id = op.get("operationId") if isinstance(op.get("operationId"), str) else ""
        text = f"{summary.rstrip('.')}. {details}" if summary and details else summary or details
        if summary and details.lower().startswith(summary.rstrip(".").lower()):
            text = details  # the description repeats the summary: once is enough
        if op.get("deprecated") is True:
            text = f"Deprecated. {text}"
        action: dict[str, Any] = {
            "name": clean_text(summary.rstrip(".") or op_id or f"{method} {path}", 200),
            "tool_name": self._tool_name(op_id or f"{method} {path}"),
            "type": "http",
            "description": clean_text(text, 300),
            "when_not_to_use": "",
            "method": method,
            "url": base + self._path(path, draft),
        }
        for key, value in (("query", draft.query), ("headers", draft.headers), ("auth", auth)):
            if value:
                action[key] = value
        if draft.params:
            action["parameters"] = draft.params
        if draft.body is not None:
            action["body"] = draft.body
        return action, draft

    def _tool_name(self, raw: str) -> str:
        base = tool_name(raw)
        name, n = base, 2
        while name.lower() in self.tool_names:
            name, n = f"{base[:60]}_{n}", n + 1
        return name

    def _base_url(self, op: dict[str, Any], item: dict[str, Any]) -> str:
        if self.base_url:
            url = self.base_url
        else:
            servers = op.get("servers") or item.get("servers") or self.document.get("servers")
            server = as_dict(servers[0]) if isinstance(servers, list) and servers else {"url": "/"}
            url = str(server.get("url") or "/")
            for var, spec in as_dict(server.get("variables")).items():
                url = url.replace(f"{{{var}}}", str(as_dict(spec).get("default", "")))
            if not urlsplit(url).scheme:
                if self.spec_url is None:
                    what = f"server URL {url!r} is relative" if servers else "spec has no servers"
                    raise OpenAPIImportError(
                        f"the {what} and the spec was read from a file; pass --base-url URL"
                    )
                url = urljoin(self.spec_url, url)
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc or "{" in url:
            raise OpenAPIImportError(f"base URL {url!r} is not an absolute http(s) URL")
        return url.rstrip("/")

    def _parameters(self, item: dict[str, Any], op: dict[str, Any]) -> list[dict[str, Any]]:
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for raw in [*(item.get("parameters") or []), *(op.get("parameters") or [])]:
            param = self.resolver.deref(raw)
            name, where = param.get("name"), param.get("in")
            if not isinstance(name, str) or where not in {"path", "query", "header", "cookie"}:
                raise SchemaError("a parameter has no name or no valid 'in'")
            merged[(name, where)] = param  # an operation's parameter overrides the path's
        return list(merged.values())

    def _parameter(self, spec: dict[str, Any], draft: ActionParts) -> None:
        name, where = spec["name"], spec["in"]
        required = where == "path" or spec.get("required") is True
        label = f"{where} parameter {name!r}"
        if name in self.pins and where in {"path", "query", "header"}:
            self._pin(name, where, draft)
            return
        content = as_dict(spec.get("content"))
        node = (
            spec["schema"]
            if "schema" in spec
            else next((as_dict(m).get("schema") for m in content.values()), {})
        )
        shape = self.resolver.flatten(node or {})
        if where == "cookie":
            draft.leave_out(required, f"{label}: cookie parameters are not supported")
            return
        if where == "header" and name.lower() in _IGNORED_HEADERS:
            draft.notes.append(f"{label} ignored (the gateway sets it)")
            return
        if where == "header" and not required:
            draft.notes.append(f"optional {label} left out (headers are always sent)")
            return
        param = to_parameter(
            self.resolver, shape, description=spec.get("description", ""), required=required
        )
        if param["type"] in {"array", "object"} and not content:
            kept = self._structured(spec, where, param, required, label, draft)
            if kept is None:
                return
            param = kept
        pname, param = _comparison(name, where, param, draft)
        draft.params[pname] = param
        if where == "path":
            draft.path_args[name] = pname
        elif where == "query" and required:
            draft.query_required.append((name, arg(pname)))
        elif where == "query":
            draft.query[name] = arg(pname)
        else:
            draft.headers[name] = arg(pname)

    @staticmethod
    def _structured(
        spec: dict[str, Any],
        where: str,
        param: dict[str, Any],
        required: bool,
        label: str,
        draft: ActionParts,
    ) -> dict[str, Any] | None:
        """An array or object parameter as the gateway can send it, or None (left out)."""
        style = spec.get("style") or ("form" if where == "query" else "simple")
        explode = spec.get("explode", style == "form")
        items = param.get("items", {"type": "string"})
        if param["type"] == "array" and items["type"] in SCALARS:
            if where == "query" and style == "form" and explode:
                return param  # one pair per item: tag=a&tag=b
            if not explode:
                allowed = (
                    f" Allowed values: {', '.join(map(str, items['enum']))}."
                    if "enum" in items
                    else ""
                )
                text = f"{param.get('description', '')} Comma-separated values.{allowed}"
                return {"type": "string", "description": text.strip()} | (
                    {"required": True} if required else {}
                )
        what = f"{'exploded ' if explode else ''}{style}-style {param['type']}"
        draft.leave_out(required, f"{label}: {what} values are not supported")
        return None

    def _pin(self, name: str, where: str, draft: ActionParts) -> None:
        value = self.pins[name]
        draft.secrets += re.findall(r"\{\{\s*secrets\.(\w+)\s*\}\}", value)
        draft.notes.append(f"{where} parameter {name!r} set to {value!r} (--set)")
        if where == "path":
            draft.pinned_path[name] = value if "{{" in value else quote(value, safe="")
        elif where == "query":
            draft.query[name] = value
        else:
            draft.headers[name] = value

    def _path(self, path: str, draft: ActionParts) -> str:
        out: list[str] = []
        used: set[str] = set()
        for piece in re.split(r"(\{[^{}/]+\})", path):
            match = re.fullmatch(r"\{([^{}/]+)\}", piece)
            if match is None:
                out.append(quote(piece, safe=_PATH_SAFE))
            elif match.group(1) in draft.pinned_path:
                out.append(draft.pinned_path[match.group(1)])
            elif match.group(1) in draft.path_args:
                used.add(match.group(1))
                out.append(arg(draft.path_args[match.group(1)]))
            else:
                raise SchemaError(f"path parameter {match.group(1)!r} is not declared")
        for name in set(draft.path_args) - used:
            del draft.params[draft.path_args[name]]
            draft.notes.append(f"path parameter {name!r} does not appear in the path; left out")
        query = [f"{quote(k, safe='')}={v}" for k, v in draft.query_required]
        return "".join(out) + ("?" + "&".join(query) if query else "")

    # --- security ---------------------------------------------------------------------------

    def _auth(self, op: dict[str, Any], base: str, draft: ActionParts) -> dict[str, Any] | None:
        requirements = op.get("security", self.document.get("security"))
        if not isinstance(requirements, list) or not requirements:
            return None
        reasons: list[str] = []
        anonymous = False  # {} among the alternatives: the API may be called without credentials
        usable: list[tuple[dict[str, Any], ActionParts]] = []
        for requirement in requirements:
            if not as_dict(requirement):
                anonymous = True
                continue
            attempt = ActionParts()
            try:
                usable.append((self._requirement(as_dict(requirement), base, attempt), attempt))
            except SchemaError as e:
                reasons.append(str(e))
        if usable:
            # Alternatives (Stripe: basic or bearer): the one with the fewest secrets to set,
            # the spec's order among equals. Stripe's basic scheme wants the key as the user
            # name and an empty password, which no secret can hold; its bearer takes the key.
            auth, chosen = min(usable, key=lambda pair: len(set(pair[1].secrets)))
            draft.secrets += chosen.secrets
            draft.headers.update(chosen.headers)
            draft.query_required += chosen.query_required
            return auth
        if anonymous:
            return None
        raise SchemaError("; ".join(dict.fromkeys(reasons)))

    def _requirement(
        self, requirement: dict[str, Any], base: str, draft: ActionParts
    ) -> dict[str, Any]:
        auths: list[dict[str, Any]] = []
        for scheme_name, scopes in requirement.items():
            if scheme_name not in self.schemes:
                raise SchemaError(f"unknown security scheme {scheme_name!r}")
            scheme = self.resolver.deref(self.schemes[scheme_name])
            secret = self.secret_names[scheme_name]
            auth = scheme_auth(
                scheme_name, scheme, secret, scopes, base, refresh_tokens=self.refresh_tokens
            )
            if token_url := code_flow_token_url(scheme, base):
                self.code_flows[secret] = token_url
            auths.append(auth)
            draft.secrets += re.findall(r"\{\{secrets\.(\w+)\}\}", json.dumps(auth))
        primary, *extra = auths
        for auth in extra:  # several schemes at once: only extra API keys can ride along
            if auth["type"] != "api_key":
                raise SchemaError(
                    "needs several security schemes at once, one of them not an API key"
                )
            if auth["in"] == "header":
                draft.headers[auth["name"]] = auth["value"]
            else:
                draft.query_required.append((auth["name"], auth["value"]))
        return primary


_COMPARISONS = {"<=": "at_most", ">=": "at_least", "<": "before", ">": "after"}


def _comparison(
    name: str, where: str, param: dict[str, Any], draft: ActionParts
) -> tuple[str, dict[str, Any]]:
    """The parameter name for ``name``; ``DateSent<`` becomes ``date_sent_before`` (and says so).

    APIs such as Twilio's filter with ``Field<`` and ``Field>``; cut to ``Field`` they would
    collide, and the model could not tell them apart.
    """
    for suffix, word in _COMPARISONS.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            base = tool_name(name[: -len(suffix)])
            pname = draft.claim(f"{base}_{word}", where)
            text = param.get("description", "")
            field_name, relation = name[: -len(suffix)], word.replace("_", " ")
            sent = f"Sent as {name}: only results with {field_name} {relation}."
            return pname, {**param, "description": f"{sent} {text}".strip()}
    return draft.claim(name, where), param
