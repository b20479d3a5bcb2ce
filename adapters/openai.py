"""OpenAI tool shapes: Chat Completions ``tools`` and Responses ``tools``.

Chat Completions wraps the function (``{"type": "function", "function": {...}}``); the Responses
API flattens it and adds ``strict``. Names must match ``^[a-zA-Z0-9_-]{1,64}$``.

``strict: true`` is set only when the schema already satisfies Structured Outputs: every object
has ``additionalProperties: false`` and lists all its properties in ``required``, only supported
keywords and ``format`` values appear, objects nest at most 10 deep, and the documented size caps
hold. Optional parameters are never rewritten to nullable ones, because that would change what
the model may omit; such tools are exported with ``strict: false``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Sequence
from typing import Any, Literal, TypedDict

from adapters._schema import JSONSchema, ToolDefinition, check_name

__all__ = [
    "ChatCompletionsTool",
    "FunctionDefinition",
    "ResponsesTool",
    "is_strict_compatible",
    "to_openai_responses_tool",
    "to_openai_responses_tools",
    "to_openai_tool",
    "to_openai_tools",
]

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

# Structured Outputs' supported subset ("Supported schemas" in OpenAI's structured-outputs guide).
_STRICT_KEYWORDS = frozenset(
    {
        "type", "description", "title", "properties", "required", "additionalProperties",
        "items", "enum", "const", "anyOf", "$ref", "$defs", "definitions",
        "pattern", "format", "multipleOf", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "minItems", "maxItems",
    }
)  # fmt: skip
_STRICT_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
_MAX_OBJECT_DEPTH = 10
_MAX_PROPERTIES = 5000
_MAX_ENUM_VALUES = 1000


class FunctionDefinition(TypedDict):
    """The ``function`` member of a Chat Completions tool."""

    name: str
    description: str
    parameters: JSONSchema


class ChatCompletionsTool(TypedDict):
    """One entry of Chat Completions' ``tools``."""

    type: Literal["function"]
    function: FunctionDefinition


class ResponsesTool(TypedDict):
    """One entry of the Responses API's ``tools``."""

    type: Literal["function"]
    name: str
    description: str
    parameters: JSONSchema
    strict: bool


def to_openai_tool(definition: ToolDefinition) -> ChatCompletionsTool:
    """Map one tool to a Chat Completions function tool.

    Raises:
        ValueError: If the name breaks OpenAI's name rule.
    """
    return {
        "type": "function",
        "function": {
            "name": check_name(definition, NAME_PATTERN, "openai"),
            "description": definition.description,
            "parameters": copy.deepcopy(definition.parameters),
        },
    }


def to_openai_tools(definitions: Sequence[ToolDefinition]) -> list[ChatCompletionsTool]:
    """Return the value of a Chat Completions request's ``tools`` field."""
    return [to_openai_tool(d) for d in definitions]


def to_openai_responses_tool(definition: ToolDefinition) -> ResponsesTool:
    """Map one tool to a Responses API function tool, strict only when the schema allows it.

    Raises:
        ValueError: If the name breaks OpenAI's name rule.
    """
    return {
        "type": "function",
        "name": check_name(definition, NAME_PATTERN, "openai-responses"),
        "description": definition.description,
        "parameters": copy.deepcopy(definition.parameters),
        "strict": is_strict_compatible(definition.parameters),
    }


def to_openai_responses_tools(definitions: Sequence[ToolDefinition]) -> list[ResponsesTool]:
    """Return the value of a Responses API request's ``tools`` field."""
    return [to_openai_responses_tool(d) for d in definitions]


def is_strict_compatible(schema: JSONSchema) -> bool:
    """Tell whether OpenAI would accept ``schema`` unchanged with ``strict: true``."""
    if schema.get("type") != "object":  # the root must be a plain object, never anyOf
        return False
    properties = enum_values = 0
    for node, depth in _walk(schema, 0):
        types = node.get("type", [])
        types = [types] if isinstance(types, str) else types
        if not set(node) <= _STRICT_KEYWORDS or not set(types) <= _STRICT_TYPES:
            return False
        if "format" in node and node["format"] not in _STRICT_FORMATS:
            return False
        if "object" in types:
            props = node.get("properties", {})
            required = node.get("required", [])
            if node.get("additionalProperties") is not False or sorted(required) != sorted(props):
                return False
            properties += len(props)
            if depth > _MAX_OBJECT_DEPTH:
                return False
        enum_values += len(node.get("enum", []))
    return properties <= _MAX_PROPERTIES and enum_values <= _MAX_ENUM_VALUES


def _walk(node: Any, depth: int) -> Iterator[tuple[JSONSchema, int]]:
    """Yield every subschema with the number of object levels enclosing and including it."""
    if not isinstance(node, dict):
        return
    types = node.get("type", [])
    depth += "object" in ([types] if isinstance(types, str) else types)
    yield node, depth
    children: list[Any] = [node.get("items"), *node.get("anyOf", [])]
    for key in ("properties", "$defs", "definitions"):
        if isinstance(node.get(key), dict):
            children += node[key].values()
    for child in children:
        yield from _walk(child, depth)
