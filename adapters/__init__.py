"""Export formats for tool definitions, one module per external format.

:func:`export_tools` maps neutral :class:`ToolDefinition` objects to exactly the value that goes
in the target API's ``tools`` field. The format table below is the only place that knows the
format names; each module holds one short mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from adapters._schema import JSONSchema, ToolDefinition, ToolKind
from adapters.anthropic import to_anthropic_tools
from adapters.gemini import to_gemini_tools
from adapters.mcp import to_mcp_tools
from adapters.openai import to_openai_responses_tools, to_openai_tools

__all__ = ["FORMATS", "ExportFormat", "JSONSchema", "ToolDefinition", "ToolKind", "export_tools"]

ExportFormat = Literal["openai", "openai-responses", "anthropic", "gemini", "mcp"]

_EXPORTERS: dict[str, Callable[[Sequence[ToolDefinition]], Sequence[object]]] = {
    "openai": to_openai_tools,
    "openai-responses": to_openai_responses_tools,
    "anthropic": to_anthropic_tools,
    "gemini": to_gemini_tools,
    "mcp": to_mcp_tools,
}

FORMATS: tuple[str, ...] = tuple(_EXPORTERS)
"""The export format names, in display order."""


def export_tools(definitions: Sequence[ToolDefinition], fmt: str) -> Any:
    """Return the ``tools`` value for ``fmt``: a JSON-serialisable list.

    Args:
        definitions: The tools to export, in order.
        fmt: One of :data:`FORMATS`.

    Raises:
        ValueError: If ``fmt`` is unknown (the message lists the valid formats), or a tool cannot
            be expressed in that format (the message names the tool).
    """
    try:
        exporter = _EXPORTERS[fmt]
    except KeyError:
        raise ValueError(
            f"unknown tool format {fmt!r}; valid formats: {', '.join(FORMATS)}"
        ) from None
    return exporter(definitions)
