"""Forms, buttons and confirmations: client-side tool calls the chat widget renders.

The gateway answers such a call by ending its response with ``finish_reason: "tool_calls"`` and a
``ui`` entry describing what to show. The client answers with a ``tool`` message for that call:
form values, ``{"clicked": true}`` or ``{"confirmed": true|false}``. Form values are validated
here field by field; an invalid value is a 422 naming the field, and nothing is stored or sent.
An answer that is not meant as one at all (a client that runs tools itself and answered with an
error text) means the widget was not shown: the model is told, and the conversation goes on.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import orjson

from gateway.definitions.actions import (
    ButtonAction,
    FormAction,
    FormField,
    HttpAction,
    HttpClick,
    NavigateClick,
)
from gateway.definitions.validation import compile_pattern
from gateway.engine.context import Conversation, lead_text
from gateway.engine.executor import Execution, Executor
from gateway.errors import RequestError

__all__ = [
    "button_spec",
    "click_button",
    "confirm_spec",
    "form_spec",
    "is_email",
    "is_form_answer",
    "not_shown",
    "parse_answer",
    "submit_form",
    "validate_form",
]

MAX_FIELD_CHARS = 10_000
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_PHONE = re.compile(r"^\+?[0-9 ()./-]{5,32}$")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def parse_answer(content: Any) -> Any:
    """A tool message's content as data (JSON text, a list of text parts, or plain text)."""
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            return content
    return content


def is_email(value: str) -> bool:
    """Whether ``value`` looks like an email address (the check an ``email`` form field gets)."""
    return _EMAIL.match(value) is not None


def is_form_answer(action: FormAction, answer: Any) -> bool:
    """Whether a client's answer is meant as this form's values at all.

    An object naming at least one of the form's fields (or ``{"values": {...}}``) is a form
    answer, checked field by field (a 422 naming a bad one). Anything else — an error text from
    a client that could not show the form, ``{"error": ...}`` — means the form was not shown.
    """
    if not isinstance(answer, dict):
        return False
    if isinstance(answer.get("values"), dict):
        return True
    return any(f.name in answer for f in action.fields)


def not_shown(kind: str, label: str) -> str:
    """What the model is told when the client could not show a form, button or confirmation."""
    return (
        f"The {kind} '{label}' could not be shown to the customer (their app cannot display "
        "it), so nothing was submitted or run. Continue in conversation."
    )


async def submit_form(
    executor: Executor,
    conversation: Conversation,
    action: FormAction,
    values: dict[str, Any],
    call_id: str,
) -> tuple[str, Execution | None]:
    """Capture a checked form's ``maps_to`` fields and run its ``submit`` request, if any."""
    for f in action.fields:
        if f.maps_to and f.name in values:
            conversation.lead[f.maps_to.split(".", 1)[1]] = lead_text(values[f.name])
    summary = (
        f"The customer submitted the form '{action.title or action.name}': "
        + orjson.dumps(values).decode()
    )
    if action.submit is None:
        return summary, None
    execution = await executor.execute_request(
        action.submit,
        tool=action.tool_name,
        conversation=conversation,
        values=conversation.values(form=values, secrets=executor.secrets),
        tool_call_id=call_id,
    )
    return f"{summary}\n{execution.content}", execution


async def click_button(
    executor: Executor, conversation: Conversation, action: ButtonAction, call_id: str
) -> tuple[str, Execution | None]:
    """The customer clicked: run the button's request (or note that the page was opened)."""
    if isinstance(action.on_click, HttpClick):
        execution = await executor.execute_request(
            action.on_click.http,
            tool=action.tool_name,
            conversation=conversation,
            values=conversation.values(secrets=executor.secrets),
            tool_call_id=call_id,
        )
        return f"The customer clicked '{action.label}'.\n{execution.content}", execution
    return f"The customer clicked '{action.label}' and opened the page.", None


def form_spec(action: FormAction, prefill: dict[str, Any]) -> dict[str, Any]:
    """What the widget needs to render a form (prefilled with what the model knows)."""
    fields = []
    for f in action.fields:
        spec: dict[str, Any] = {
            "name": f.name,
            "label": f.label or f.name,
            "type": f.type,
            "required": f.required,
        }
        if f.options:
            spec["options"] = list(f.options)
        if f.pattern:
            spec["pattern"] = f.pattern
        if isinstance(prefill.get(f.name), str | int | float | bool):
            spec["value"] = prefill[f.name]
        fields.append(spec)
    return {"title": action.title or action.name, "fields": fields}


def button_spec(action: ButtonAction, url: str | None) -> dict[str, Any]:
    """What the widget needs to render a button."""
    spec: dict[str, Any] = {"label": action.label}
    if isinstance(action.on_click, NavigateClick):
        spec["url"] = url
    else:
        spec["method"] = action.on_click.http.method
    return spec


def confirm_spec(
    action: HttpAction, request: dict[str, Any], args: dict[str, Any]
) -> dict[str, Any]:
    """What the widget shows when asking the customer to allow a write action."""
    return {
        "title": action.name,
        "message": f"Allow the assistant to run “{action.name}”?",
        "method": request.get("method"),
        "url": request.get("url"),
        "arguments": args,
    }


def _fail(action: FormAction, field: str, reason: str) -> RequestError:
    return RequestError(
        422,
        f"form {action.tool_name!r}: field {field!r}: {reason}",
        code="invalid_form_value",
        param=field,
    )


def _check(action: FormAction, f: FormField, value: Any) -> Any:
    """Validate and normalise one submitted value."""
    if f.type == "checkbox":
        if isinstance(value, str) and value.lower() in {"true", "false", "on", "off"}:
            return value.lower() in {"true", "on"}
        if not isinstance(value, bool):
            raise _fail(action, f.name, "expected true or false")
        return value
    if f.type == "number":
        if isinstance(value, bool):
            raise _fail(action, f.name, "expected a number")
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                raise _fail(action, f.name, "expected a number") from None
        if (
            not isinstance(value, int | float)
            or value != value
            or value in {float("inf"), float("-inf")}
        ):
            raise _fail(action, f.name, "expected a number")
        return value
    if not isinstance(value, str):
        raise _fail(action, f.name, "expected text")
    value = value.strip()
    if len(value) > MAX_FIELD_CHARS:
        raise _fail(action, f.name, f"longer than {MAX_FIELD_CHARS} characters")
    if _CONTROL.search(value) or (f.type != "textarea" and ("\n" in value or "\r" in value)):
        raise _fail(action, f.name, "contains control characters")
    if f.type == "email" and not is_email(value):
        raise _fail(action, f.name, "not a valid email address")
    if f.type == "phone" and (not _PHONE.match(value) or sum(c.isdigit() for c in value) < 5):
        raise _fail(action, f.name, "not a valid phone number")
    if f.type == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            raise _fail(action, f.name, "expected a date as YYYY-MM-DD") from None
    if f.type == "select" and f.options and value not in f.options:
        raise _fail(action, f.name, "not one of the options: " + ", ".join(f.options))
    if f.pattern:
        try:
            # RE2: linear in the value's length, whatever pattern the operator wrote.
            pattern = compile_pattern(f.pattern)
        except ValueError:
            # Saved before patterns were checked for RE2: refuse rather than guess.
            raise _fail(action, f.name, "the form's pattern cannot be checked") from None
        if pattern.fullmatch(value) is None:
            raise _fail(action, f.name, "does not have the expected format")
    return value


def validate_form(action: FormAction, answer: Any) -> dict[str, Any]:
    """Check submitted form values; return them normalised.

    Raises:
        RequestError: 422 naming the first invalid field.
    """
    if not isinstance(answer, dict):
        raise RequestError(
            422,
            f"form {action.tool_name!r}: expected the submitted values as a JSON object",
            code="invalid_form_value",
        )
    values = answer.get("values", answer) if "values" in answer else answer
    if not isinstance(values, dict):
        raise RequestError(422, f"form {action.tool_name!r}: values must be an object")
    known = {f.name: f for f in action.fields}
    for name in values:
        if name not in known:
            raise _fail(action, str(name)[:64], "not a field of this form")
    out: dict[str, Any] = {}
    for f in action.fields:
        value = values.get(f.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if f.required and f.type != "checkbox":
                raise _fail(action, f.name, "is required")
            continue
        out[f.name] = _check(action, f, value)
    return out
