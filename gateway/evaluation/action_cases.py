"""One action's guardrail check cases, as the dashboard and the admin API edit them.

A case is one customer message, optional conversation variables, and whether the model should
CALL or SKIP this action (with, for a call, the arguments it should use)::

    {"message": "Where is my order A-10023?", "expect": "call",
     "variables": {"lead.email": "jane@example.com"},
     "arguments": {"order_number": "A-10023"}}

:func:`to_suite` turns an action's cases into the :class:`~gateway.evaluation.suite.Suite` that
``actiongate eval`` runs, so the dashboard's Guardrail check and the command line score the same
cases the same way; :func:`suite_yaml` writes that suite as a file the command line accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import RequestError
from gateway.evaluation.suite import Suite, parse_suite

__all__ = [
    "MAX_CASES",
    "MAX_RUNS",
    "ActionCase",
    "coerce_arguments",
    "parse_cases",
    "suite_yaml",
    "to_suite",
]

MAX_CASES = 200
"""Cases one action may have (each is one model request per run)."""
MAX_RUNS = 10
"""Runs the dashboard and ``POST /api/actions/{tool_name}/eval`` allow."""
_CONVERSATION_KEYS = ("conversation.id", "conversation.user_id", "conversation.channel")
_LEAD_KEY = re.compile(r"^lead\.[A-Za-z_][A-Za-z0-9_]{0,63}$")


class ActionCase(BaseModel):
    """One labelled customer message for one action."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    """Shown in the report; blank takes the message (made unique)."""
    message: str = Field(max_length=4000)
    """What the customer writes."""
    expect: Literal["call", "skip"]
    """Whether the model should call this action in its first answer, or not."""
    variables: dict[str, str] = Field(default_factory=dict)
    """Conversation values by dotted name: ``lead.email``, ``conversation.user_id`` ..."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """For a call: the arguments the model should pass (a subset match)."""

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("variables")
    @classmethod
    def _known_variables(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if key not in _CONVERSATION_KEYS and not _LEAD_KEY.match(key):
                raise ValueError(
                    f"{key!r} is not a conversation variable (use lead.NAME, "
                    "conversation.id, conversation.user_id or conversation.channel)"
                )
            if len(item) > 1000:
                raise ValueError(f"{key!r} is longer than 1000 characters")
        return {k: v.strip() for k, v in value.items() if v.strip()}

    def conversation(self) -> dict[str, Any]:
        """The request body's ``conversation`` object for these variables."""
        out: dict[str, Any] = {}
        for key, value in self.variables.items():
            namespace, _, name = key.partition(".")
            if namespace == "lead":
                out.setdefault("lead", {})[name] = value
            else:
                out[name] = value
        return out


def _where(loc: Sequence[int | str]) -> str:
    """``cases[2].message`` from a pydantic location inside the list."""
    text = "cases"
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else f".{step}"
    return text


def parse_cases(data: Any) -> list[ActionCase]:
    """Check a list of cases; blank names take their message, made unique.

    Raises:
        RequestError: 422 whose message and ``param`` name the case and field.
    """
    if not isinstance(data, list):
        raise RequestError(422, "cases: expected a list of cases", "invalid_cases", "cases")
    if len(data) > MAX_CASES:
        raise RequestError(
            422, f"cases: at most {MAX_CASES} cases per action", "invalid_cases", "cases"
        )
    cases: list[ActionCase] = []
    for index, item in enumerate(data):
        try:
            case = ActionCase.model_validate(item)
        except ValidationError as e:
            error = e.errors()[0]
            where = _where([index, *error["loc"]])
            message = str(error["msg"]).removeprefix("Value error, ")
            raise RequestError(422, f"{where}: {message}", "invalid_cases", where) from None
        if case.arguments and case.expect == "skip":
            where = f"cases[{index}].arguments"
            message = f"{where}: only a case the model should CALL has expected arguments"
            raise RequestError(422, message, "invalid_cases", where)
        cases.append(case)
    _name(cases)
    return cases


def _name(cases: list[ActionCase]) -> None:
    seen: set[str] = set()
    for case in cases:
        base = (case.name.strip() or case.message)[:80]
        name, number = base, 2
        while name in seen:
            name, number = f"{base} ({number})", number + 1
        seen.add(name)
        case.name = name


def to_suite(
    tool_name: str,
    cases: Sequence[ActionCase],
    *,
    agent: str | None = None,
    runs: int = 1,
) -> Suite:
    """The eval suite that judges ``tool_name`` on ``cases``.

    Raises:
        RequestError: 422 when there are no cases to run.
    """
    if not cases:
        raise RequestError(
            422, f"action {tool_name!r} has no guardrail check cases yet", "no_cases", "cases"
        )
    return parse_suite(_suite_data(tool_name, cases, agent, runs), f"cases of {tool_name}")


def _suite_data(
    tool_name: str, cases: Sequence[ActionCase], agent: str | None, runs: int
) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for case in cases:
        item: dict[str, Any] = {"name": case.name, "messages": [case.message]}
        if case.variables:
            item["conversation"] = case.conversation()
        item["calls" if case.expect == "call" else "skips"] = [tool_name]
        if case.arguments:
            item["arguments"] = {tool_name: dict(case.arguments)}
        items.append(item)
    data: dict[str, Any] = {"agent": agent} if agent else {}
    return data | {"runs": runs, "cases": items}


def suite_yaml(
    tool_name: str, cases: Sequence[ActionCase], *, agent: str | None = None, runs: int = 1
) -> str:
    """The suite as a YAML file for ``actiongate eval SUITE --config FILE``."""
    to_suite(tool_name, cases, agent=agent, runs=runs)  # the file must load as it is written
    head = (
        f"# Guardrail check cases of {tool_name}, exported from the dashboard.\n"
        f"# Run: actiongate eval THIS_FILE --config YOUR_CONFIG.yaml\n"
    )
    data = _suite_data(tool_name, cases, agent, runs)
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def coerce_arguments(cases: Sequence[ActionCase], types: Mapping[str, str]) -> list[ActionCase]:
    """Expected argument values typed as text, converted to the parameter's type.

    The dashboard's fields are text; ``"2"`` for an ``integer`` parameter must compare equal to
    the model's ``2``. A value that does not convert is left as it was typed.
    """
    for case in cases:
        for name, value in list(case.arguments.items()):
            kind = types.get(name)
            if isinstance(value, str) and kind in ("integer", "number", "boolean"):
                case.arguments[name] = _typed(value, kind)
    return list(cases)


def _typed(value: str, kind: str) -> Any:
    text = value.strip()
    if kind == "boolean":
        return {"true": True, "false": False}.get(text.lower(), value)
    try:
        return int(text) if kind == "integer" else float(text)
    except ValueError:
        return value
