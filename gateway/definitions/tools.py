"""Turn actions into neutral tool definitions (README, "Definitions and validation").

Only model-filled values reach a schema: an http action's ``parameters``, a form's fields as
optional prefill values, nothing for a button. Conversation variables and secrets never appear.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from adapters._schema import ToolDefinition
from gateway.definitions.actions import Action, ButtonAction, FormAction, HttpAction, NavigateClick

__all__ = ["describe", "to_tool_definition", "to_tool_definitions"]

_FIELD_TYPES: dict[str, dict[str, Any]] = {
    "number": {"type": "number"},
    "checkbox": {"type": "boolean"},
}
_READ_ONLY = frozenset({"GET"})
_IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})


def describe(action: Action, summary: str) -> str:
    """Compose a tool description: what it does, then the marked guardrail."""
    text = (action.description or summary).strip()
    if action.when_not_to_use.strip():
        text += f"\n\nWhen NOT to use: {action.when_not_to_use.strip()}"
    return text


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def to_tool_definition(action: Action) -> ToolDefinition:
    """Build the neutral tool definition of one action."""
    if isinstance(action, HttpAction):
        # 1. Parameters become properties; `required` follows each parameter's flag.
        props = {name: p.json_schema() for name, p in action.parameters.items()}
        required = [name for name, p in action.parameters.items() if p.required]
        method = action.method
        return ToolDefinition(
            name=action.tool_name,
            description=describe(action, f"{action.name}."),
            parameters=_object(props, required),
            kind="http",
            title=action.name,
            read_only=method in _READ_ONLY,
            destructive=method not in _READ_ONLY,
            idempotent=method in _IDEMPOTENT,
        )
    if isinstance(action, FormAction):
        # 2. A form's fields are optional prefill values the model may already know.
        props = {}
        for f in action.fields:
            schema = dict(_FIELD_TYPES.get(f.type, {"type": "string"}))
            schema["description"] = f"Prefill for '{f.label or f.name}' (optional)."
            if f.type == "select" and f.options:
                schema["enum"] = list(f.options)
            props[f.name] = schema
        title = action.title or action.name
        summary = f"Show the customer the form '{title}' to collect: " + ", ".join(
            f.label or f.name for f in action.fields
        )
        return ToolDefinition(
            name=action.tool_name,
            description=describe(action, summary + "."),
            parameters=_object(props, []),
            kind="form",
            title=action.name,
            destructive=action.submit is not None and action.submit.method != "GET",
        )
    # 3. A button takes no input; the customer decides whether to click it.
    assert isinstance(action, ButtonAction)
    navigates = isinstance(action.on_click, NavigateClick)
    summary = f"Show the customer a button labelled '{action.label}'" + (
        " that opens a page." if navigates else " that runs a request when clicked."
    )
    return ToolDefinition(
        name=action.tool_name,
        description=describe(action, summary),
        parameters=_object({}, []),
        kind="button",
        title=action.name,
        read_only=navigates,
        destructive=not navigates,
    )


def to_tool_definitions(actions: Iterable[Action]) -> list[ToolDefinition]:
    """Build the tool definitions of several actions, in order."""
    return [to_tool_definition(a) for a in actions]
