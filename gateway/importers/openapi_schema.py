"""OpenAPI objects to action pieces for :mod:`gateway.importers.openapi`: schemas and security.

Every schema is normalised in three steps before it is mapped:

1. local ``$ref`` chains are followed (``#/components/...``, ``#/$defs/...``); an external or
   dangling reference, or a cycle, is a :class:`SchemaError` whose message is the reason the
   operation is skipped;
2. ``allOf`` parts are merged (properties, ``required``, the first type and description);
3. nullables are unwrapped: 3.0 ``nullable: true``, 3.1 ``type: [T, "null"]`` and ``anyOf`` /
   ``oneOf`` with a ``null`` branch (FastAPI's shape for optional fields). What remains of
   ``anyOf`` / ``oneOf`` with several branches is kept as ``variants``.

Only JSON types the gateway's :class:`~gateway.definitions.actions.Parameter` knows come out;
richer shapes fall back to ``object`` (the model then fills a generic JSON value).

Security schemes map to an action's ``auth`` with ``{{secrets.NAME}}`` references
(:func:`scheme_auth`); request bodies are :mod:`gateway.importers.openapi_bodies`. Anything the
gateway cannot send is a :class:`SchemaError` too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urljoin

__all__ = [
    "SCALARS",
    "Resolver",
    "SchemaError",
    "as_dict",
    "clean_text",
    "object_branch",
    "schema_summary",
    "scheme_auth",
    "to_parameter",
    "upper_snake",
]

SCALARS = frozenset({"string", "integer", "number", "boolean"})
_TYPES = SCALARS | {"array", "object"}
_MAX_DEPTH = 40
_MAX_NODES = 5000
_HINT_FORMATS = frozenset({"date", "date-time", "time", "email", "uuid", "uri", "duration"})


class SchemaError(ValueError):
    """A schema cannot be mapped; the message is the reason shown next to the operation."""


def as_dict(node: Any) -> dict[str, Any]:
    """``node`` if it is a mapping with string keys, else an empty dict (specs are untrusted)."""
    if isinstance(node, dict):
        return {str(k): v for k, v in node.items()}
    return {}


def clean_text(text: Any, limit: int = 0) -> str:
    """Collapse whitespace; with ``limit``, cut at a word boundary and mark the cut."""
    out = " ".join(str(text).split()) if text else ""
    if limit and len(out) > limit:
        out = out[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.") + "…"
    return out


class Resolver:
    """Follows local ``$ref`` pointers inside one document."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def pointer(self, ref: str) -> Any:
        """Return the node a local reference (``#/a/b``) points at.

        Raises:
            SchemaError: the reference is external or points nowhere.
        """
        if not ref.startswith("#"):
            raise SchemaError(f"external $ref {ref!r} is not supported (bundle the spec first)")
        node: Any = self.document
        for raw in unquote(ref[1:]).split("/")[1:]:
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise SchemaError(f"$ref {ref!r} points nowhere")
        return node

    def deref(self, node: Any) -> dict[str, Any]:
        """Follow a ``$ref`` chain; sibling ``description``/``summary`` keys win (OpenAPI 3.1).

        Raises:
            SchemaError: external, dangling or cyclic reference.
        """
        seen: list[str] = []
        overrides: dict[str, Any] = {}
        current = as_dict(node)
        while "$ref" in current:
            ref = current["$ref"]
            if not isinstance(ref, str):
                raise SchemaError("$ref must be a string")
            if ref in seen:
                raise SchemaError(f"$ref cycle through {ref!r}")
            seen.append(ref)
            for key in ("description", "summary"):
                if key in current and key not in overrides:
                    overrides[key] = current[key]
            current = as_dict(self.pointer(ref))
        return {**current, **overrides}

    def flatten(self, node: Any) -> dict[str, Any]:
        """Normalise a schema: refs followed, ``allOf`` merged, nullables unwrapped.

        The result has a single ``type`` (or none), ``properties``/``required`` merged, and
        ``variants`` holding the non-null branches of a remaining ``anyOf``/``oneOf``.
        Property schemas are left as they are (flatten them when you need them).

        Raises:
            SchemaError: bad reference, or nesting deeper or wider than any real spec needs.
        """
        return self._flatten(node, 0, [_MAX_NODES])

    def _flatten(self, node: Any, depth: int, budget: list[int]) -> dict[str, Any]:
        budget[0] -= 1
        if depth > _MAX_DEPTH or budget[0] < 0:
            raise SchemaError("schema nested too deeply (or recursive through allOf/anyOf)")
        schema = self.deref(node)
        out = {k: v for k, v in schema.items() if k not in {"allOf", "anyOf", "oneOf", "type"}}
        out["properties"] = dict(as_dict(schema.get("properties")))
        out["required"] = [str(r) for r in schema.get("required") or [] if isinstance(r, str)]
        # Step 1: a type list such as ["string", "null"] (3.1) or nullable: true (3.0).
        types = schema.get("type")
        names = [t for t in (types if isinstance(types, list) else [types]) if isinstance(t, str)]
        if "null" in names or schema.get("nullable") is True:
            out["nullable"] = True
        names = [t for t in names if t != "null"]
        if len(names) == 1 and names[0] in _TYPES:
            out["type"] = names[0]
        # Step 2: allOf parts are merged; the schema's own keys win over the parts'.
        parts = [self._flatten(part, depth + 1, budget) for part in schema.get("allOf") or []]
        if parts:
            properties: dict[str, Any] = {}
            for merged in parts:
                properties.update(merged["properties"])
                out["required"] += [r for r in merged["required"] if r not in out["required"]]
                for key, value in merged.items():
                    out.setdefault(key, value)
            out["properties"] = properties | out["properties"]
        # Step 3: anyOf/oneOf: null branches make the value optional, one branch left is the type.
        branches = [*(schema.get("anyOf") or []), *(schema.get("oneOf") or [])]
        variants = [self._flatten(b, depth + 1, budget) for b in branches if isinstance(b, dict)]
        real = [v for v in variants if not _is_null(v)]
        if any(v.get("nullable") is True for v in variants if _is_null(v)):
            out["nullable"] = True
        if len(real) == 1:
            for key, value in real[0].items():
                if key in {"properties", "required"} and not out[key]:
                    out[key] = value
                else:
                    out.setdefault(key, value)
        elif real:
            out["variants"] = real
        if "const" in out and "enum" not in out:
            out["enum"] = [out["const"]]
        if "type" not in out:
            if out["properties"]:
                out["type"] = "object"
            elif "items" in out:
                out["type"] = "array"
            elif real and len({v.get("type") for v in real}) == 1 and real[0].get("type"):
                out["type"] = real[0]["type"]
        return out


def _is_null(schema: Mapping[str, Any]) -> bool:
    """A ``null`` branch, or one that only constrains (``{"required": [...]}``, ``{}``)."""
    shapes = ("type", "items", "enum", "variants")
    return not schema["properties"] and not any(key in schema for key in shapes)


def object_branch(shape: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema to map field by field: the shape itself or its one object variant."""
    if shape.get("type") == "object" and "variants" not in shape:
        return shape
    objects = [v for v in shape.get("variants", []) if v.get("type") == "object"]
    return objects[0] if len(objects) == 1 else None


def _variant_type(shape: Mapping[str, Any]) -> str:
    """One type for several branches: theirs when they agree, else ``string`` or ``object``."""
    kinds = {v.get("type") for v in shape["variants"]}
    if len(kinds) == 1 and kinds <= _TYPES:
        return str(kinds.pop())
    return "string" if kinds <= SCALARS else "object"


def _enum(values: Any) -> list[Any] | None:
    if not isinstance(values, list):
        return None
    kept = [v for v in values if isinstance(v, str | int | float | bool)]
    return kept or None


def _describe(shape: Mapping[str, Any], description: str) -> str:
    """The parameter description: its words plus format, default and any-of hints."""
    text = clean_text(description or shape.get("description"), 600)
    parts = [text if not text or text.endswith((".", "!", "?", ")")) else f"{text}."]
    fmt = shape.get("format")
    if isinstance(fmt, str) and fmt in _HINT_FORMATS:
        parts.append(f"Format: {fmt}.")
    if "variants" in shape and _variant_type(shape) == "string":
        kinds = dict.fromkeys(str(v.get("type")) for v in shape["variants"])
        if len(kinds) > 1:
            parts.append("One of the types: " + ", ".join(kinds) + ".")
    parts += _constraints(shape)
    default = shape.get("default")
    if isinstance(default, bool):
        parts.append(f"Default: {'true' if default else 'false'}.")
    elif isinstance(default, str | int | float) and str(default):
        parts.append(f"Default: {clean_text(str(default), 80)}.")  # 0 is a default too
    return " ".join(p for p in parts if p)


def _constraints(shape: Mapping[str, Any]) -> list[str]:
    """Length, range, pattern and an example, in words: every export format can carry them."""
    out = []
    low, high = shape.get("minLength"), shape.get("maxLength")
    if isinstance(low, int) and isinstance(high, int):
        out.append(f"{low} to {high} characters.")
    elif isinstance(high, int):
        out.append(f"At most {high} characters.")
    elif isinstance(low, int) and low > 1:
        out.append(f"At least {low} characters.")
    least, most = shape.get("minimum"), shape.get("maximum")
    if _is_number(least) and _is_number(most):
        out.append(f"From {least} to {most}.")
    elif _is_number(least):
        out.append(f"At least {least}.")
    elif _is_number(most):
        out.append(f"At most {most}.")
    pattern = shape.get("pattern")
    if isinstance(pattern, str) and len(pattern) <= 120:
        out.append(f"Pattern: {pattern}")
    examples = shape.get("examples")
    example = examples[0] if isinstance(examples, list) and examples else shape.get("example")
    if isinstance(example, str | int | float) and not isinstance(example, bool):
        out.append(f"Example: {clean_text(str(example), 80)}.")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def to_parameter(
    resolver: Resolver,
    shape: dict[str, Any],
    *,
    description: str = "",
    required: bool = False,
    depth: int = 0,
) -> dict[str, Any]:
    """Map a flattened schema to an action parameter definition (the YAML form).

    Raises:
        SchemaError: bad reference inside ``items``.
    """
    kind = _variant_type(shape) if "variants" in shape else shape.get("type")
    param: dict[str, Any] = {"type": kind if kind in _TYPES else "string"}
    text = _describe(shape, description)
    if text:
        param["description"] = text
    enum = _enum(shape.get("enum"))
    if enum is not None and param["type"] in SCALARS:
        param["enum"] = enum
    if param["type"] == "array" and depth < 4:
        items = resolver.flatten(shape.get("items") or {})
        item = to_parameter(resolver, items, depth=depth + 1)
        if item != {"type": "string"}:
            param["items"] = item
    if param["type"] == "object" and depth < 4:
        obj = object_branch(shape) if "variants" in shape else shape
        needed = set((obj or {}).get("required") or [])
        fields = {
            name: to_parameter(
                resolver, resolver.flatten(sub), required=name in needed, depth=depth + 1
            )
            for name, sub in as_dict((obj or {}).get("properties")).items()
            if as_dict(sub).get("readOnly") is not True
        }
        if fields:
            param["properties"] = fields  # the structure, with descriptions and constraints
    if required:
        param["required"] = True
    return param


def schema_summary(resolver: Resolver, node: Any, budget: int = 1200) -> str:
    """A compact JSON sketch of a schema for a generic ``body`` parameter's description.

    Walks at most a few hundred nodes, so shared (aliased or recursive) schemas stay cheap.
    """
    counter = [0]

    def sketch(raw: Any, depth: int, seen: tuple[str, ...]) -> Any:
        counter[0] += 1
        ref = as_dict(raw).get("$ref")
        if isinstance(ref, str) and ref in seen:
            return {"$ref": ref.rsplit("/", 1)[-1]}
        if depth > 5 or counter[0] > 300:
            return "…"
        try:
            shape = resolver.flatten(raw)
        except SchemaError:
            return {}
        seen = (*seen, ref) if isinstance(ref, str) else seen
        out: dict[str, Any] = {}
        if "variants" in shape:
            out["oneOf"] = [sketch(v, depth + 1, seen) for v in shape["variants"]]
        if shape.get("type"):
            out["type"] = shape["type"]
        if _enum(shape.get("enum")):
            out["enum"] = _enum(shape.get("enum"))
        if shape.get("properties"):
            out["properties"] = {
                k: sketch(v, depth + 1, seen)
                for k, v in shape["properties"].items()
                if not as_dict(v).get("readOnly")
            }
            if shape["required"]:
                out["required"] = shape["required"]
        if shape.get("type") == "array":
            out["items"] = sketch(shape.get("items") or {}, depth + 1, seen)
        return out

    text = json.dumps(sketch(node, 0, ()), ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= budget else text[: budget - 1] + "…"


def upper_snake(name: str) -> str:
    """A secret name from a scheme name: ``PetstoreAuth`` -> ``PETSTORE_AUTH``."""
    text = re.sub(r"OAuth", "Oauth", name)
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper() or "API"
    return f"S_{text}" if text[0].isdigit() else text


def code_flow_token_url(scheme: dict[str, Any], base: str) -> str | None:
    """The ``tokenUrl`` of an OAuth2 scheme's authorization-code flow, absolute, or None."""
    if scheme.get("type") != "oauth2":
        return None
    flow = as_dict(as_dict(scheme.get("flows")).get("authorizationCode"))
    return urljoin(base + "/", str(flow["tokenUrl"])) if flow.get("tokenUrl") else None


def refresh_auth(token_url: str, secret: str, scopes: Any) -> dict[str, Any]:
    """``oauth2_refresh_token`` auth from secrets named after the scheme."""
    ref = "{{secrets.%s}}"
    auth = {
        "type": "oauth2_refresh_token",
        "token_url": token_url,
        "client_id": ref % f"{secret}_CLIENT_ID",
        "client_secret": ref % f"{secret}_CLIENT_SECRET",
        "refresh_token": ref % f"{secret}_REFRESH_TOKEN",
    }
    if isinstance(scopes, list) and scopes:
        auth["scope"] = " ".join(map(str, scopes))
    return auth


def scheme_auth(
    name: str,
    scheme: dict[str, Any],
    secret: str,
    scopes: Any,
    base: str,
    *,
    refresh_tokens: bool = False,
) -> dict[str, Any]:
    """Map one security scheme to an action ``auth``.

    ``refresh_tokens``: an authorization-code flow gets the ``refresh_token`` grant at its
    ``tokenUrl`` instead of a bearer token the operator renews.

    Raises:
        SchemaError: a scheme type the gateway cannot send.
    """
    code_token_url = code_flow_token_url(scheme, base)
    if refresh_tokens and code_token_url:
        return refresh_auth(code_token_url, secret, scopes)
    kind = scheme.get("type")
    label = f"security scheme {name!r}"
    ref = "{{secrets.%s}}"
    if kind == "apiKey":
        where = scheme.get("in")
        if where not in {"header", "query"}:
            raise SchemaError(f"{label}: API keys in {where} are not supported")
        return {
            "type": "api_key",
            "name": str(scheme.get("name")),
            "in": where,
            "value": ref % secret,
        }
    if kind == "http":
        http = str(scheme.get("scheme", "")).lower()
        if http == "bearer":
            return {"type": "bearer", "token": ref % secret}
        if http == "basic":
            return {
                "type": "basic",
                "username": ref % f"{secret}_USERNAME",
                "password": ref % f"{secret}_PASSWORD",
            }
        raise SchemaError(f"{label}: HTTP {http or '?'} authentication is not supported")
    if kind == "openIdConnect" or (
        kind == "oauth2" and not as_dict(as_dict(scheme.get("flows")).get("clientCredentials"))
    ):
        # A user's token (authorization code, password, implicit, OpenID Connect): the
        # operator obtains one and sets it as the secret; the gateway sends it as a bearer.
        return {"type": "bearer", "token": ref % secret}
    if kind == "oauth2":
        flow = as_dict(as_dict(scheme.get("flows")).get("clientCredentials"))
        if not flow.get("tokenUrl"):
            raise SchemaError(f"{label}: the clientCredentials flow has no tokenUrl")
        auth = {
            "type": "oauth2_client_credentials",
            "token_url": urljoin(base + "/", str(flow["tokenUrl"])),
            "client_id": ref % f"{secret}_CLIENT_ID",
            "client_secret": ref % f"{secret}_CLIENT_SECRET",
        }
        if isinstance(scopes, list) and scopes:
            auth["scope"] = " ".join(map(str, scopes))
        return auth
    raise SchemaError(f"{label}: {kind} authentication is not supported")
