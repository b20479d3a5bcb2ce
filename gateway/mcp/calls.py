"""What one MCP ``tools/call`` does when the customer has to be asked (README, "MCP").

- An http action whose request needs a conversation value that is not known (``lead.email``,
  ``conversation.user_id``) asks for it, one string field per value (``format: email`` for an
  email); accepted values are checked as the chat body's are, stored in the conversation's lead,
  and the action runs. A declined question sends nothing (a ``declined`` record).
- A write action (``confirm``: ``auto`` for POST/PUT/PATCH/DELETE, or ``true``) asks for a
  boolean ``confirm`` after a dry run, with the method, URL and body the log would show
  (redacted); declined, nothing is sent.
- A form asks for its fields (prefilled with the model's arguments), validated with the chat
  path's :func:`~gateway.proxy.interactive.validate_form`, then
  :func:`~gateway.proxy.interactive.submit_form` captures ``maps_to`` and runs ``submit``.

Without an asker that can ask, an http action runs as before (a missing value refused by name,
a write sent at once) and a form is refused.
"""

from __future__ import annotations

from typing import Any

from gateway.definitions.actions import FormAction, FormField, HttpAction
from gateway.definitions.templating import is_empty, lookup
from gateway.engine.arguments import parse_arguments
from gateway.engine.context import Conversation, check_value
from gateway.engine.executor import Execution, Executor
from gateway.engine.rendering import required_variables
from gateway.errors import ExecutionRefused, RequestError
from gateway.mcp.elicitation import Asker, Question
from gateway.proxy.interactive import is_email, submit_form, validate_form

__all__ = ["run_form", "run_http"]

_PREVIEW_BODY_CHARS = 500
_FORMATS = {"email": "email", "date": "date"}


def _askable(variable: str) -> bool:
    """Conversation values an MCP client's user can give: lead fields and the user id."""
    namespace, _, name = variable.partition(".")
    return (namespace == "lead" and "." not in name and bool(name)) or variable == (
        "conversation.user_id"
    )


def _missing(action: HttpAction, conversation: Conversation) -> list[str]:
    required = [n for n, p in action.parameters.items() if p.required]
    values = conversation.values()
    return sorted(
        v
        for v in required_variables(action, required)
        if _askable(v) and is_empty(lookup(values, v))
    )


def _field(variable: str) -> str:
    return variable.rpartition(".")[2]


def _values_question(action: HttpAction, missing: list[str]) -> Question:
    properties: dict[str, Any] = {}
    for variable in missing:
        name = _field(variable)
        prop: dict[str, Any] = {"type": "string", "title": name.replace("_", " ")}
        if name == "email":
            prop["format"] = "email"
        properties[name] = prop
    names = ", ".join(_field(v) for v in missing)
    message = (
        f"To run “{action.name}” the assistant needs your {names}; "
        "it is sent with this request and kept for this conversation."
    )
    return Question(
        "values",
        message,
        {"type": "object", "properties": properties, "required": sorted(properties)},
    )


def _store_values(conversation: Conversation, missing: list[str], content: dict[str, Any]) -> str:
    """Check and store the answered values; the reason if one is unusable ("" when all are)."""
    checked: dict[str, str] = {}
    for variable in missing:
        name = _field(variable)
        try:
            value = check_value(name, content.get(name)).strip()
        except RequestError as e:
            return f"the answer for {name!r} is unusable ({e}), so nothing was sent"
        if not value:
            return f"the answer for {name!r} is empty, so nothing was sent"
        if name == "email" and not is_email(value):
            return f"the answer for {name!r} is not a valid email address, so nothing was sent"
        checked[variable] = value
    for variable, value in checked.items():
        if variable == "conversation.user_id":
            conversation.user_id = value
        else:
            conversation.lead[_field(variable)] = value
    return ""


def _confirm_question(action: HttpAction, preview: Execution) -> Question:
    request = preview.record.request
    sent = f"{request.get('method')} {request.get('url')}"
    message = f"Allow the assistant to run “{action.name}”? It sends {sent}"
    body = request.get("body")
    if body:
        cut = body[:_PREVIEW_BODY_CHARS] + ("…" if len(body) > _PREVIEW_BODY_CHARS else "")
        message += f" with the body {cut}"
    schema = {
        "type": "object",
        "properties": {"confirm": {"type": "boolean", "title": "Send it", "default": False}},
        "required": ["confirm"],
    }
    return Question("confirm", message + ".", schema)


def _decline(
    executor: Executor,
    action: HttpAction | FormAction,
    conversation: Conversation,
    call_id: str,
    what: str,
) -> Execution:
    request = action if isinstance(action, HttpAction) else action.submit
    return executor.refuse(
        action.tool_name,
        f"the customer declined {what}, so nothing was sent",
        conversation,
        tool_call_id=call_id,
        outcome="declined",
        method=request.method if request else "",
        url=request.url if request else "",
    )


async def run_http(
    executor: Executor,
    conversation: Conversation,
    action: HttpAction,
    arguments: Any,
    call_id: str,
    asker: Asker,
) -> Execution:
    """Run an http action, asking first for missing values and consent where the client can."""
    run = executor.execute_action
    if not asker.supported:
        return await run(action, conversation, arguments, tool_call_id=call_id)
    try:
        parse_arguments(arguments, action.parameters, tool=action.tool_name)
    except ExecutionRefused:
        return await run(action, conversation, arguments, tool_call_id=call_id)  # refused so
    missing = _missing(action, conversation)
    if missing:
        answer = await asker.ask(_values_question(action, missing))
        if not answer.accepted:
            names = ", ".join(_field(v) for v in missing)
            return _decline(executor, action, conversation, call_id, f"to give their {names}")
        if reason := _store_values(conversation, missing, answer.content):
            return executor.refuse(
                action.tool_name,
                reason,
                conversation,
                tool_call_id=call_id,
                method=action.method,
                url=action.url,
            )
    if action.needs_confirmation:
        preview = await run(action, conversation, arguments, tool_call_id=call_id, dry_run=True)
        if not preview.ok:
            return preview
        answer = await asker.ask(_confirm_question(action, preview))
        if not answer.accepted or answer.content.get("confirm") is not True:
            return _decline(executor, action, conversation, call_id, "to allow it")
    return await run(action, conversation, arguments, tool_call_id=call_id)


def _form_property(f: FormField, prefill: Any) -> dict[str, Any]:
    prop: dict[str, Any] = {"title": f.label or f.name}
    if f.type == "checkbox":
        prop["type"] = "boolean"
    elif f.type == "number":
        prop["type"] = "number"
    else:
        prop["type"] = "string"
        if f.type in _FORMATS:
            prop["format"] = _FORMATS[f.type]
        if f.options:
            prop["enum"] = list(f.options)
        if f.pattern:
            prop["pattern"] = f.pattern
    kinds = {"boolean": bool, "number": int | float, "string": str}
    if prefill is not None and isinstance(prefill, kinds[prop["type"]]):
        prop["default"] = prefill
    return prop


def _form_question(action: FormAction, arguments: Any) -> Question:
    prefill = arguments if isinstance(arguments, dict) else {}
    properties = {f.name: _form_property(f, prefill.get(f.name)) for f in action.fields}
    required = [f.name for f in action.fields if f.required and f.type != "checkbox"]
    title = action.title or action.name
    message = f"“{title}”: please fill in this form; the answer is sent as the form says."
    return Question(
        "form", message, {"type": "object", "properties": properties, "required": required}
    )


async def run_form(
    executor: Executor,
    conversation: Conversation,
    action: FormAction,
    arguments: Any,
    call_id: str,
    asker: Asker,
) -> tuple[str, Execution | None]:
    """Ask for a form's fields, validate them as the chat does, then capture and submit."""
    if not asker.supported:
        reason = (
            f"{action.tool_name!r} is a form, which this MCP client cannot show "
            "(it did not declare elicitation support)"
        )
        execution = executor.refuse(action.tool_name, reason, conversation, tool_call_id=call_id)
        return execution.content, execution
    answer = await asker.ask(_form_question(action, arguments))
    if not answer.accepted:
        execution = _decline(executor, action, conversation, call_id, "to fill in the form")
        return execution.content, execution
    try:
        values = validate_form(action, answer.content)
    except RequestError as e:
        execution = executor.refuse(
            action.tool_name, f"{e}; nothing was sent", conversation, tool_call_id=call_id
        )
        return execution.content, execution
    return await submit_form(executor, conversation, action, values, call_id)
