"""Gemini ``tools`` shape: ``[{"functionDeclarations": [{"name", "description", "parameters"}]}]``.

``parameters`` is Gemini's ``Schema``, a select subset of the OpenAPI 3.0 schema object, so each
JSON Schema is rewritten in these steps:

1. Types become Gemini's ``Type`` names (``STRING``, ``INTEGER``, ...); ``["T", "null"]`` becomes
   ``T`` with ``nullable: true``.
2. String enums keep their values and gain ``format: "enum"``. Gemini constrains only strings, so
   enums on other types are dropped and listed in the description (``Allowed values: 1, 2.``);
   the argument keeps its type, so the model still sends a number the action can use.
3. ``const`` counts as a one-value enum; ``default`` moves into the description.
4. Keywords Gemini lacks (``additionalProperties``, ``$schema``, ``title``, ``pattern``, formats
   other than the documented ones, ...) are dropped.
5. A tool without parameters gets no ``parameters``: the documentation says to leave it unset,
   and the API rejects an ``OBJECT`` whose ``properties`` is empty. So an optional nested
   free-form object (``metadata``: any keys) is left out of the declaration; a required one is
   sent as ``OBJECT`` without ``properties`` (Gemini may refuse it: the tool needs the value).

Names must start with a letter or underscore and use only ``a-z A-Z 0-9 _ . : -``, at most 64
characters. A name that does not fit raises :class:`ValueError` naming the tool: renaming it here
would have the model call a tool the gateway does not know.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

from adapters._schema import JSONSchema, ToolDefinition, check_name

__all__ = [
    "FunctionDeclaration",
    "GeminiTool",
    "to_gemini_declaration",
    "to_gemini_schema",
    "to_gemini_tools",
]

NAME_PATTERN = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")

_TYPES = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
_FORMATS = {"NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}, "STRING": {"date-time"}}
_COPIED = ("minItems", "maxItems", "minimum", "maximum")


class FunctionDeclaration(TypedDict):
    """One Gemini ``FunctionDeclaration``."""

    name: str
    description: str
    parameters: NotRequired[JSONSchema]


class GeminiTool(TypedDict):
    """One entry of a ``generateContent`` request's ``tools``."""

    functionDeclarations: list[FunctionDeclaration]


def to_gemini_schema(schema: JSONSchema) -> JSONSchema:
    """Rewrite a JSON Schema into Gemini's ``Schema`` subset (see the module docstring).

    Raises:
        ValueError: If a subschema has no single JSON type Gemini can express.
    """
    raw = schema.get("type")
    types = [raw] if isinstance(raw, str) else list(raw or [])
    kind = [_TYPES.get(t) for t in types if t != "null"]
    if len(kind) != 1 or kind[0] is None:
        raise ValueError(f"Gemini needs one type of {', '.join(_TYPES)}; got {raw!r}")
    out: JSONSchema = {"type": kind[0]}
    if "null" in types:
        out["nullable"] = True
    notes: list[str] = []
    values = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if values is not None and out["type"] == "STRING":
        out["format"] = "enum"
        out["enum"] = [str(v) for v in values if v is not None]
    elif values is not None:
        notes.append(f"Allowed values: {', '.join(json.dumps(v) for v in values)}.")
    elif schema.get("format") in _FORMATS.get(out["type"], ()):
        out["format"] = schema["format"]
    if "default" in schema:
        notes.append(f"Default: {json.dumps(schema['default'])}.")
    description = " ".join(filter(None, [schema.get("description", ""), *notes]))
    if description:
        out["description"] = description
    if out["type"] == "ARRAY":
        out["items"] = to_gemini_schema(schema.get("items") or {"type": "string"})
    properties: dict[str, Any] = schema.get("properties") or {}
    needed = set(schema.get("required", []))
    # Gemini rejects an OBJECT without properties: an optional free-form object (``metadata``)
    # is left out, so the model cannot send it through this format but the tool stays valid.
    properties = {
        key: sub for key, sub in properties.items() if key in needed or not _free_form(sub)
    }
    if out["type"] == "OBJECT" and properties:
        out["properties"] = {key: to_gemini_schema(sub) for key, sub in properties.items()}
        required = [key for key in schema.get("required", []) if key in properties]
        if required:
            out["required"] = required
    out.update({key: schema[key] for key in _COPIED if key in schema})
    return out


def _free_form(schema: Any) -> bool:
    """An object schema that declares no fields (any keys)."""
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    return "object" in kinds and not schema.get("properties")


def to_gemini_declaration(definition: ToolDefinition) -> FunctionDeclaration:
    """Map one tool to a Gemini ``FunctionDeclaration``.

    Raises:
        ValueError: Naming the tool, if its name or schema cannot be expressed for Gemini.
    """
    name = check_name(definition, NAME_PATTERN, "gemini")
    declaration: FunctionDeclaration = {"name": name, "description": definition.description}
    if definition.parameters.get("properties"):
        try:
            declaration["parameters"] = to_gemini_schema(definition.parameters)
        except ValueError as e:
            raise ValueError(f"tool {name!r} cannot be exported as gemini: {e}") from e
    return declaration


def to_gemini_tools(definitions: Sequence[ToolDefinition]) -> list[GeminiTool]:
    """Return the value of a ``generateContent`` request's ``tools`` field (empty without tools)."""
    declarations = [to_gemini_declaration(d) for d in definitions]
    return [{"functionDeclarations": declarations}] if declarations else []
