"""MCP ``tools/list`` shape (protocol revisions 2025-06-18 and 2025-11-25).

Each tool is ``{"name", "title"?, "description", "inputSchema", "annotations"}``. ``inputSchema``
is the JSON Schema unchanged (``type: object``; MCP assumes draft 2020-12 when ``$schema`` is
absent, and a tool without parameters keeps the recommended ``additionalProperties: false``).
The annotations are hints clients use to decide, for instance, whether to ask before a call.
Only ``http`` actions are listed: forms and buttons need the chat widget, which MCP has not.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NotRequired, TypedDict

from adapters._schema import JSONSchema, ToolDefinition

__all__ = ["McpTool", "ToolAnnotations", "to_mcp_tool", "to_mcp_tools"]


class ToolAnnotations(TypedDict):
    """MCP ``ToolAnnotations``: behaviour hints, untrusted unless the server is trusted."""

    title: str
    readOnlyHint: bool
    destructiveHint: bool
    idempotentHint: bool
    openWorldHint: bool


class McpTool(TypedDict):
    """One entry of a ``tools/list`` result's ``tools``."""

    name: str
    title: NotRequired[str]
    description: str
    inputSchema: JSONSchema
    annotations: ToolAnnotations


def to_mcp_tool(definition: ToolDefinition) -> McpTool:
    """Map one tool to an MCP ``Tool``, its hints taken from the definition's flags."""
    tool: McpTool = {
        "name": definition.name,
        "description": definition.description,
        "inputSchema": copy.deepcopy(definition.parameters),
        "annotations": {
            "title": definition.title or definition.name,
            "readOnlyHint": definition.read_only,
            "destructiveHint": definition.destructive,
            "idempotentHint": definition.idempotent,
            "openWorldHint": definition.open_world,
        },
    }
    if definition.title:
        tool["title"] = definition.title
    return tool


def to_mcp_tools(definitions: Sequence[ToolDefinition]) -> list[McpTool]:
    """Return the ``tools`` of a ``tools/list`` result: the ``http`` tools, in order."""
    return [to_mcp_tool(d) for d in definitions if d.kind == "http"]
