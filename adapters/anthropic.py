"""Anthropic Messages API tool shape: ``{"name", "description", "input_schema"}``.

``input_schema`` is the JSON Schema (draft 2020-12) of the tool's input and must be
``type: object``; names must match ``^[a-zA-Z0-9_-]{1,64}$``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import TypedDict

from adapters._schema import JSONSchema, ToolDefinition, check_name

__all__ = ["AnthropicTool", "to_anthropic_tool", "to_anthropic_tools"]

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class AnthropicTool(TypedDict):
    """One entry of a Messages request's ``tools``."""

    name: str
    description: str
    input_schema: JSONSchema


def to_anthropic_tool(definition: ToolDefinition) -> AnthropicTool:
    """Map one tool to an Anthropic custom tool.

    Raises:
        ValueError: If the name breaks Anthropic's name rule.
    """
    return {
        "name": check_name(definition, NAME_PATTERN, "anthropic"),
        "description": definition.description,
        "input_schema": copy.deepcopy(definition.parameters),
    }


def to_anthropic_tools(definitions: Sequence[ToolDefinition]) -> list[AnthropicTool]:
    """Return the value of a Messages request's ``tools`` field."""
    return [to_anthropic_tool(d) for d in definitions]
