"""The neutral tool definition every export format is mapped from.

One :class:`ToolDefinition` per action. Each adapter module (``openai``, ``anthropic``, ``gemini``,
``mcp``) is a short function from this definition to its provider's shape; shared code never
branches on the provider name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["JSONSchema", "ToolDefinition", "ToolKind", "check_name"]

JSONSchema = dict[str, Any]
ToolKind = Literal["http", "form", "button"]


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """A provider-neutral description of one tool."""

    name: str
    """The tool name the model calls (matches ``^[a-zA-Z0-9_-]{1,64}$``)."""

    description: str
    """What the tool does, followed by the marked ``When NOT to use:`` guardrail."""

    parameters: JSONSchema
    """A JSON Schema ``object`` with ``properties``, ``required`` and
    ``additionalProperties: false``. Never contains conversation variables or secrets."""

    kind: ToolKind = "http"
    """Which kind of action the tool runs."""

    title: str = ""
    """Human-readable display name (the action's ``name``)."""

    read_only: bool = False
    """True when the tool only reads (an HTTP GET)."""

    destructive: bool = False
    """True when the tool may change or delete data (POST/PUT/PATCH/DELETE)."""

    idempotent: bool = False
    """True when repeating the call has no further effect (GET, PUT, DELETE)."""

    open_world: bool = True
    """True when the tool talks to an external system."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Reserved for adapter-independent metadata."""


def check_name(definition: ToolDefinition, pattern: re.Pattern[str], fmt: str) -> str:
    """Return the tool's name if ``pattern`` matches it in full.

    Args:
        definition: The tool being exported.
        pattern: The name rule of the target format.
        fmt: The export format's name, for the error message.

    Raises:
        ValueError: Naming the tool, the format and the rule it breaks.
    """
    if not pattern.fullmatch(definition.name):
        raise ValueError(
            f"tool {definition.name!r} cannot be exported as {fmt}: its name must match "
            f"{pattern.pattern}; give the action a tool_name that does"
        )
    return definition.name
