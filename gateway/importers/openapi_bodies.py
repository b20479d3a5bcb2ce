"""Request bodies of OpenAPI operations as action pieces: JSON, form-encoded and multipart.

:func:`add_body` fills an :class:`ActionParts` from an operation's ``requestBody``: a JSON body
keeps its structure as nested parameters; form-encoded and multipart bodies become one
parameter per field, nested values in the bracket encoding form APIs read (``items[0][price]``,
``metadata[KEY]``), file parts left out. Anything the gateway cannot send is a
:class:`~gateway.importers.openapi_schema.SchemaError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.importers.openapi_schema import (
    SCALARS,
    Resolver,
    SchemaError,
    as_dict,
    clean_text,
    object_branch,
    schema_summary,
    to_parameter,
)

__all__ = ["ActionParts", "add_body", "arg", "pick_media"]

_DICT_ATTRS = frozenset(n for n in dir(dict) if not n.startswith("_"))


def pick_media(content: dict[str, Any]) -> tuple[str, str] | None:
    """``(content key, media type)`` to send: JSON first, then form-encoded, then text."""
    types = {k.split(";", 1)[0].strip().lower(): k for k in content}
    for want in (
        "application/json",
        "*/*",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        if want in types:
            return types[want], "application/json" if want == "*/*" else want
    for media, key in types.items():
        if media.endswith("+json") or media.startswith("text/"):
            return key, media
    return None


def arg(name: str) -> str:
    """``{{args.NAME}}``."""
    return "{{args.%s}}" % name  # noqa: UP031 - braces would need doubling in an f-string


@dataclass
class ActionParts:
    """The pieces of one action being built, plus what was left out of it."""

    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    path_args: dict[str, str] = field(default_factory=dict)
    query_required: list[tuple[str, str]] = field(default_factory=list)
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    pinned_path: dict[str, str] = field(default_factory=dict)
    """Path parameters ``--set`` gave a value."""
    secrets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def claim(self, raw: str, where: str) -> str:
        """A parameter name for ``raw``: an identifier, unique in this action."""
        text = raw.lower() if where == "header" else raw
        base = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")[:56] or where
        base = f"p_{base}" if base[0].isdigit() else base
        base = f"{base}_" if base in _DICT_ATTRS else base  # args.items is dict.items in Jinja
        name, n = base, 2
        if name in self.params:
            name = f"{where}_{base}"
        while name in self.params:
            name, n = f"{base}_{n}", n + 1
        return name

    def leave_out(self, required: bool, reason: str) -> None:
        """Note that something optional was left out; a required one skips the operation."""
        if required:
            raise SchemaError(reason)
        self.notes.append(f"{reason}; left out")


def add_body(resolver: Resolver, spec: dict[str, Any], draft: ActionParts) -> None:
    """Map a request body: per-field parameters and a JSON body, or one ``body`` parameter.

    Raises:
        SchemaError: a media type or shape the gateway cannot send.
    """
    content = as_dict(spec.get("content"))
    picked = pick_media(content)
    if picked is None:
        kinds = ", ".join(content) or "none"
        raise SchemaError(f"request body media type(s) {kinds} not supported")
    key, ctype = picked
    node = as_dict(content[key]).get("schema") or {}
    shape = resolver.flatten(node)
    required = spec.get("required") is True
    text = clean_text(spec.get("description") or shape.get("description"), 600)
    obj = object_branch(shape)
    fields = {
        k: resolver.flatten(v)
        for k, v in (obj or {}).get("properties", {}).items()
        if as_dict(v).get("readOnly") is not True
    }
    if obj is not None and not fields and not required and not obj.get("additionalProperties"):
        # An optional body with nothing in it (Stripe declares one on every GET): no body.
        draft.notes.append("optional request body without fields ignored")
        return
    if obj is not None and fields and ctype.endswith("json"):
        draft.body = {}
        if ctype != "application/json":  # e.g. application/merge-patch+json
            draft.headers["Content-Type"] = ctype
        for name, sub in fields.items():
            pname = draft.claim(name, "body")
            # The action always sends its body, so the body's required fields are required
            # even where the spec leaves the body itself optional (Twilio's messages).
            needed = name in obj["required"]
            draft.params[pname] = to_parameter(resolver, sub, required=needed)
            draft.body[name] = arg(pname)
    elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        _form_body(resolver, obj, fields, required, draft, ctype)
    else:
        json_body = ctype.endswith("json")
        param = to_parameter(resolver, shape) if json_body else {"type": "string"}
        if param["type"] == "string" and json_body and shape.get("type") != "string":
            param = {"type": "object"}  # any JSON value
        if json_body:
            text = f"{text} JSON schema: {schema_summary(resolver, node)}".strip()
        pname = draft.claim("body", "body")
        draft.params[pname] = {"type": param["type"]} | ({"description": text} if text else {})
        draft.params[pname] |= {k: param[k] for k in ("enum", "items") if k in param}
        draft.params[pname]["required"] = True
        quoted = param["type"] == "string" and json_body  # a JSON string: quotes around it
        draft.body = f'"{arg(pname)}"' if quoted else arg(pname)
        draft.headers["Content-Type"] = ctype


def _form_body(
    resolver: Resolver,
    obj: dict[str, Any] | None,
    fields: dict[str, dict[str, Any]],
    required: bool,
    draft: ActionParts,
    ctype: str = "application/x-www-form-urlencoded",
) -> None:
    """A form-encoded or multipart body: one parameter per field.

    Multipart bodies carry text parts only: a file part (``format: binary``/``base64``) is left
    out with a note, or skips the operation when required.

    Optional fields the model leaves out are left out of the body; arrays and objects with
    declared fields go in with the bracket encoding form APIs read (``tags[0]=a``,
    ``items[0][price]=p``). A free-form object (``metadata``) is left out (optional) or skips
    the operation (required): its keys are not known.
    """
    if obj is None or not fields:
        raise SchemaError("form-encoded bodies are supported only as an object of fields")
    draft.body = {}
    for name, sub in fields.items():
        needed = name in obj["required"]  # the body is always sent (see above)
        kind = sub.get("type")
        if sub.get("format") in ("binary", "base64") or (
            kind == "array" and as_dict(sub.get("items")).get("format") in ("binary", "base64")
        ):
            draft.leave_out(needed, f"form field {name!r}: file parts are not supported")
            continue
        param = to_parameter(resolver, sub, required=needed)
        dropped: list[str] = []
        sendable = _form_prune(param, name, dropped)
        if sendable is None:
            what = f"a value of type {param.get('type')!r} cannot be form-encoded"
            draft.leave_out(needed, f"form field {name!r}: {what}")
            continue
        if dropped:
            shown = ", ".join(dropped[:5]) + (
                f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
            )
            draft.leave_out(
                False, f"form field {name!r}: sub-fields that cannot be form-encoded ({shown})"
            )
        param = sendable
        pname = draft.claim(name, "body")
        draft.params[pname] = param
        draft.body[name] = arg(pname)
    if not draft.body:
        what = "multipart" if ctype.startswith("multipart/") else "form-encoded"
        raise SchemaError(
            f"the {what} body has no field the gateway can send "
            "(file parts and object fields are not supported)"
        )
    draft.headers["Content-Type"] = ctype


def _form_prune(param: dict[str, Any], path: str, dropped: list[str]) -> dict[str, Any] | None:
    """``param`` as the bracket encoding can carry it, or None when it cannot.

    Scalars pass, and arrays and objects of them (``items[0][price]``). An object without
    declared fields (Stripe's ``metadata``) takes any keys the model sends, each encoded as
    ``metadata[KEY]=VALUE``, and says so in its description. A sub-field the encoding cannot
    carry is pruned, its bracket path added to ``dropped``, rather than losing the whole field;
    a required one, or a field left with no sub-field, cannot be sent.
    """
    kind = param.get("type")
    if kind == "array":
        inner: list[str] = []
        items = _form_prune(param.get("items") or {"type": "string"}, f"{path}[N]", inner)
        if items is None:
            return None
        dropped += inner
        return {**param, "items": items}
    if kind == "object":
        fields = as_dict(param.get("properties"))
        if not fields:
            note = f"Any keys; each value is sent as {path}[KEY]=VALUE."
            described = " ".join(filter(None, [param.get("description", ""), note]))
            return {k: v for k, v in param.items() if k != "properties"} | {
                "description": described
            }
        kept: dict[str, Any] = {}
        pruned: list[str] = []
        for name, field in fields.items():
            inner = []
            sub = _form_prune(field, f"{path}[{name}]", inner)
            if sub is not None:
                kept[name] = sub
                pruned += inner
            elif field.get("required"):
                return None
            else:
                pruned.append(f"{path}[{name}]")
        if not kept:
            return None
        dropped += pruned
        return {**param, "properties": kept}
    return dict(param) if kind in SCALARS else None
