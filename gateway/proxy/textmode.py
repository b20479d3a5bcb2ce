"""Forms, buttons and confirmations for clients that cannot show widgets (``ui: text``).

A client that runs tools itself (pydantic-ai, the OpenAI Agents SDK) or only shows text says so
with the request header ``X-Actiongate-UI: text`` or the agent's ``ui: text``. Then no call is
ever handed to the client: each interactive action becomes a gateway-side tool.

- **Form** — a tool whose parameters are the form's fields (required ones required, options as
  an enum). The model collects the values in conversation and calls it; the values go through the
  same :func:`~gateway.proxy.interactive.validate_form` (a bad value is told to the model, which
  asks again), ``maps_to`` fields are captured and ``submit`` runs, as for a widget.
- **Button** — a link is given to the model to offer in text; a button that sends a request
  takes ``customer_said_yes`` and runs only when it is ``true``.
- **Write action** — takes ``customer_confirmed``: called without it, the gateway renders the
  request (so a missing value is refused first) and tells the model what to ask; the action runs
  only when the model calls it again with ``customer_confirmed: true``.

Trust differs from the widget: a widget confirmation is the customer's own click, which the model
cannot produce; in text mode the model reports the customer's "yes". A prompt injection that
convinces the model can therefore confirm a write. Use ``ui: text`` for clients that cannot show
widgets, and keep write actions that must never run unconfirmed on widget agents.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.definitions.actions import (
    ButtonAction,
    FormAction,
    FormField,
    HttpAction,
    HttpClick,
    HttpRequest,
)
from gateway.engine.context import Conversation
from gateway.engine.executor import Execution, Executor
from gateway.engine.rendering import render_request
from gateway.engine.workspace import AgentView
from gateway.errors import ExecutionRefused, RequestError
from gateway.proxy.interactive import click_button, submit_form, validate_form

__all__ = ["CLICK_FLAG", "CONFIRM_FLAG", "UI_MODES", "run_in_text", "text_tools"]

UI_MODES = ("widgets", "text")
CONFIRM_FLAG = "customer_confirmed"
CLICK_FLAG = "customer_said_yes"

_FIELD_TYPES: dict[str, dict[str, Any]] = {
    "number": {"type": "number"},
    "checkbox": {"type": "boolean"},
    "email": {"type": "string", "format": "email"},
    "date": {"type": "string", "format": "date"},
}


def _field_schema(f: FormField) -> dict[str, Any]:
    schema = dict(_FIELD_TYPES.get(f.type, {"type": "string"}))
    if f.options:
        schema["enum"] = list(f.options)
    if f.pattern:
        schema["pattern"] = f.pattern
    if f.label and f.label != f.name:
        schema["description"] = f.label
    return schema


def _form_tool(tool: dict[str, Any], action: FormAction) -> dict[str, Any]:
    function = dict(tool["function"])
    function["description"] = (
        f"{function.get('description', '')} Ask the customer for these details in "
        "conversation, then call this with their answers."
    ).strip()
    function["parameters"] = {
        "type": "object",
        "properties": {f.name: _field_schema(f) for f in action.fields},
        "required": [f.name for f in action.fields if f.required and f.type != "checkbox"],
        "additionalProperties": False,
    }
    return {**tool, "function": function}


def _flag_tool(tool: dict[str, Any], flag: str, meaning: str) -> dict[str, Any]:
    function = dict(tool["function"])
    parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
    parameters["properties"] = {
        **(parameters.get("properties") or {}),
        flag: {"type": "boolean", "description": meaning},
    }
    parameters["required"] = [*(parameters.get("required") or []), flag]
    function["parameters"] = parameters
    return {**tool, "function": function}


def text_tools(agent: AgentView) -> list[dict[str, Any]]:
    """The agent's tools as a client without widgets gets them."""
    out = []
    for tool in agent.tools:
        action = agent.actions.get(tool["function"]["name"])
        if isinstance(action, FormAction):
            out.append(_form_tool(tool, action))
        elif isinstance(action, ButtonAction) and isinstance(action.on_click, HttpClick):
            meaning = "true only after the customer said yes to this in conversation"
            out.append(_flag_tool(tool, CLICK_FLAG, meaning))
        elif isinstance(action, HttpAction) and action.needs_confirmation:
            meaning = (
                "true only after you told the customer what this will do and they said yes; "
                "call with false first to learn what to ask"
            )
            out.append(_flag_tool(tool, CONFIRM_FLAG, meaning))
        else:
            out.append(tool)
    return out


def _object(arguments: Any) -> dict[str, Any] | None:
    if isinstance(arguments, dict):
        return dict(arguments)
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


Result = tuple[str, Execution | None]
"""What the model is given, and the execution to record when a request ran or was refused."""


def _ran(execution: Execution) -> Result:
    return execution.content, execution


async def run_in_text(
    executor: Executor, conversation: Conversation, action: Any, call_id: str, arguments: Any
) -> Result:
    """Handle a form, button or confirmation call in conversation."""
    args = _object(arguments)
    if args is None:
        return f"{action.tool_name}: the arguments must be a JSON object; call it again.", None
    if isinstance(action, FormAction):
        try:
            values = validate_form(action, args)
        except RequestError as e:
            retry = "Ask the customer again, then call it again."
            return f"The form was not submitted: {e}. {retry}", None
        return await submit_form(executor, conversation, action, values, call_id)
    if isinstance(action, ButtonAction):
        return await _button(executor, conversation, action, call_id, args)
    assert isinstance(action, HttpAction)
    confirmed = args.pop(CONFIRM_FLAG, None) is True
    raw = orjson.dumps(args).decode()
    if confirmed:
        return _ran(await executor.execute_action(action, conversation, raw, tool_call_id=call_id))
    preview = await executor.execute_action(
        action, conversation, raw, tool_call_id=call_id, dry_run=True
    )
    if preview.outcome != "success":
        return _ran(preview)
    request = preview.record.request
    return (
        f"Not run yet. Ask the customer to confirm in conversation that you may "
        f"“{action.name}” ({request.get('method')} {request.get('url')}, with {raw}). Only after "
        f"they say yes, call {action.tool_name} again with the same arguments and "
        f"{CONFIRM_FLAG}: true."
    ), None


async def _button(
    executor: Executor,
    conversation: Conversation,
    action: ButtonAction,
    call_id: str,
    args: dict[str, Any],
) -> Result:
    if not isinstance(action.on_click, HttpClick):
        try:
            url = render_request(HttpRequest(url=action.on_click.navigate), conversation.values())
        except ExecutionRefused as e:
            refused = executor.refuse(action.tool_name, str(e), conversation, tool_call_id=call_id)
            return _ran(refused)
        return f"Offer the customer this link as text, labelled '{action.label}': {url.url}", None
    if args.get(CLICK_FLAG) is not True:
        return (
            f"Not run. Ask the customer whether they want to '{action.label}'; only after they "
            f"say yes, call {action.tool_name} with {CLICK_FLAG}: true."
        ), None
    return await click_button(executor, conversation, action, call_id)
