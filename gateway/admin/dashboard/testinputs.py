"""The Test panel's inputs, the wizard's live preview and its variable picker.

The Test panel asks for one value per template variable an action uses (``lead.email``) and
one per model argument, typed from the argument's schema, so an operator never writes JSON to
try an action. The preview is :func:`~gateway.definitions.tools.to_tool_definition` run on the
draft: the page shows the very description the model will read, guardrail included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.definitions.actions import Action, HttpAction, Parameter, request_of
from gateway.definitions.config import parse_action
from gateway.definitions.tools import to_tool_definition
from gateway.definitions.validation import template_variables
from gateway.engine.rendering import required_variables
from gateway.errors import ConfigError, RequestError

__all__ = [
    "SEED_VARIABLES",
    "TestInput",
    "captured_lead_fields",
    "panel_inputs",
    "parse_test_form",
    "preview",
    "tool_view",
]

SEED_VARIABLES = (
    "conversation.id",
    "conversation.user_id",
    "conversation.channel",
    "message.content",
    "message.sentiment",
    "lead.email",
    "lead.name",
    "agent.id",
)
"""The conversation variables every action may use (README, "Template variables")."""

VAR_PREFIX = "var:"
ARG_PREFIX = "arg:"
Control = Literal["text", "number", "checkbox", "select", "textarea"]


@dataclass(frozen=True, slots=True)
class TestInput:
    """One labelled input of a Test panel."""

    __test__ = False  # not a pytest class, whatever its name

    name: str
    """What the label shows: the variable as templates write it (``lead.email``, ``args.q``)."""
    field: str
    """The form field's name (``var:lead.email``, ``arg:q``)."""
    control: Control = "text"
    options: tuple[str, ...] = ()
    """A select's choices (an enum), blank first unless required."""
    step: str = ""
    """A number input's step: ``1`` for integers, ``any`` for numbers."""
    hint: str = ""
    required: bool = False

    def as_json(self) -> dict[str, Any]:
        """The input as the page script rebuilds it from the preview."""
        return {
            "name": self.name,
            "field": self.field,
            "control": self.control,
            "options": list(self.options),
            "step": self.step,
            "hint": self.hint,
            "required": self.required,
        }


def _choice(value: str | int | float | bool) -> str:
    """An enum value as its option's text (JSON for numbers and booleans)."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _argument_input(name: str, p: Parameter) -> TestInput:
    words = [p.type, "required" if p.required else "", p.description]
    hint = ", ".join(w for w in words if w)
    label, field = f"args.{name}", f"{ARG_PREFIX}{name}"
    if p.enum is not None:
        options = tuple(_choice(v) for v in p.enum)
        return TestInput(label, field, "select", options, hint=hint, required=p.required)
    control: Control = "text"
    step = ""
    if p.type in ("integer", "number"):
        control, step = "number", "1" if p.type == "integer" else "any"
    elif p.type == "boolean":
        control = "checkbox"
    elif p.type == "object":
        control, hint = "textarea", hint + " (a JSON object)"
    elif p.type == "array":
        hint += " (comma-separated values)"
    return TestInput(label, field, control, step=step, hint=hint, required=p.required)


def panel_inputs(action: Action) -> list[TestInput]:
    """The variables ``action`` uses (secrets aside: the gateway fills them), then its arguments."""
    request = request_of(action)
    required = required_variables(request) if request is not None else set()
    inputs = [
        TestInput(
            name=var,
            field=f"{VAR_PREFIX}{var}",
            required=var in required,
            hint="required: the request is not sent without it" if var in required else "optional",
        )
        for var in template_variables(action)
        if not var.startswith(("secrets.", "args."))
    ]
    if isinstance(action, HttpAction):
        inputs += [_argument_input(name, p) for name, p in action.parameters.items()]
    return inputs


def _fail(name: str, message: str) -> RequestError:
    return RequestError(422, f"{name}: {message}", code="invalid_test", param="args")


def _number(name: str, text: str, kind: str) -> int | float:
    try:
        return int(text) if kind == "integer" else float(text)
    except ValueError:
        raise _fail(
            name, f"expected {'a whole number' if kind == 'integer' else 'a number'}"
        ) from None


def _argument(name: str, p: Parameter, text: str) -> Any:
    """The typed value of one argument's input."""
    if p.enum is not None:
        for value in p.enum:
            if text == _choice(value):
                return value
        raise _fail(name, "choose one of the listed values")
    if p.type in ("integer", "number"):
        return _number(name, text, p.type)
    if p.type == "array":
        kind = p.items.type if p.items is not None else "string"
        parts = [part.strip() for part in text.split(",") if part.strip()]
        return [_number(name, t, kind) if kind in ("integer", "number") else t for t in parts]
    if p.type == "object":
        try:
            parsed: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _fail(name, "expected a JSON object")
        return parsed
    return text


def parse_test_form(
    form: Mapping[str, str], parameters: Mapping[str, Parameter]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Test panel's (variables, args): blank inputs are left out, arguments typed.

    Raises:
        RequestError: 422 naming the argument whose value does not fit its type.
    """
    variables: dict[str, Any] = {}
    for key, value in form.items():
        if key.startswith(VAR_PREFIX) and value.strip():
            head, dot, tail = key.removeprefix(VAR_PREFIX).partition(".")
            if dot:
                variables.setdefault(head, {})[tail] = value.strip()
    args: dict[str, Any] = {}
    for name, p in parameters.items():
        text = form.get(f"{ARG_PREFIX}{name}", "")
        if p.type == "boolean" and p.enum is None:
            args[name] = text == "on"
        elif text.strip():
            args[name] = _argument(f"args.{name}", p, text.strip())
    return variables, args


def captured_lead_fields(actions: Iterable[Action]) -> list[str]:
    """The ``lead.*`` variables forms capture (``maps_to``), beyond the seed's two."""
    found = {
        f.maps_to
        for a in actions
        for f in getattr(a, "fields", [])
        if f.maps_to and f.maps_to not in SEED_VARIABLES
    }
    return sorted(found)


def preview(definition: Mapping[str, Any] | None, problem: str = "") -> dict[str, Any]:
    """What the model will see for a draft: its tool name, description and schema, or why not."""
    if definition is None:
        return {"ok": False, "error": problem or "the definition is not complete yet"}
    try:
        action = parse_action(dict(definition))
    except ConfigError as e:
        return {"ok": False, "error": str(e)}
    return tool_view(action)


def tool_view(action: Action) -> dict[str, Any]:
    """The tool the model sees for ``action`` and the Test panel's inputs for it."""
    tool = to_tool_definition(action)
    return {
        "ok": True,
        "tool_name": tool.name,
        "description": tool.description,
        "parameters": orjson.dumps(tool.parameters, option=orjson.OPT_INDENT_2).decode(),
        "arguments": list(getattr(action, "parameters", {})),
        "form_fields": [f.name for f in getattr(action, "fields", [])],
        "inputs": [i.as_json() for i in panel_inputs(action)],
    }
