"""Starter guardrail cases from an action's "When not to use" text, by fixed rules (no model).

The operator's guardrail is split into conditions: one per line or sentence, and a sentence
joined with "or if / or when / or for / or unless" gives one per part. Each condition becomes a
SKIP case and the action gets one CALL case. The messages are drafts for the operator to fix,
built like this:

* **The CALL message** asks for the action in its own words ("I'd like to look up order.") and
  states a sample value for every required or fixed-choice argument ("My order number is
  A-10023."): the example in the argument's description (``e.g. A-10023``), else the first
  allowed value, else a sample by name (order number, email, amount, date) or ``example``.
  An action that uses ``{{lead.email}}`` gets ``lead.email=jane@example.com`` and the customer
  says that address.
* **A SKIP message** is that request with the condition made true. Recognised conditions:
  a value not provided ("has not provided an order number", "without an email") leaves that
  value out of the message and the variables; "general question" asks one; "... policy" asks
  about that policy; "older than N days" says it was delivered N + 15 days ago; "unless ...
  clearly asked for a refund" only asks how refunds work; "support problem" / "existing
  customer" reports a broken order first; "not delivered yet" says it has not arrived.
  Any other condition adds a note asking the operator to rewrite the message.

Same input, same cases: nothing here guesses, so the operator's edits are what make them good.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.evaluation.action_cases import ActionCase

__all__ = ["SAMPLE_EMAIL", "guardrail_conditions", "starter_cases", "starters_for"]

SAMPLE_EMAIL = "jane@example.com"
_I = re.IGNORECASE
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSES = re.compile(r",?\s+or\s+(?=(?:if|when|for|unless|while)\b)", _I)
_EXAMPLE = re.compile(r"\be\.g\.,?\s*([^\s,;)]+?)[.,;)]?(?:\s|$)", _I)
_MISSING = re.compile(
    r"(?:has not|hasn't|have not|haven't|not|never|no)\s+(?:yet\s+)?"
    r"(?:provided|given|shared|told us|said)\s+(?:us\s+)?(?:an?|the|their|his|her|your)?\s*"
    r"(?P<a>[a-z ]+)|without\s+(?:an?|the|their|his|her|your)?\s*(?P<b>[a-z ]+)",
    _I,
)
_UNLESS_ASKED = re.compile(
    r"unless .*(?:clearly|explicitly)\s+asked\s+(?:for|to)\s+(?:an?|the)?\s*(?P<x>[a-z]+)", _I
)
_POLICY = re.compile(r"\b(?P<x>[a-z]+)\s+policy\b", _I)
_OLDER = re.compile(r"older than (?P<n>\d+)\s*days?", _I)


@dataclass
class _Request:
    """The CALL case's message as parts, so a SKIP case can leave one out."""

    ask: str
    facts: dict[str, str] = field(default_factory=dict)
    """Argument (or ``lead.email``) -> the sentence that states it."""
    arguments: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)

    def text(self, without: str | None = None) -> str:
        return " ".join([self.ask, *(s for k, s in self.facts.items() if k != without)])


def guardrail_conditions(guardrail: str) -> list[str]:
    """The guardrail's conditions: its lines and sentences, split at "or if/when/for/unless"."""
    out: list[str] = []
    for sentence in _SENTENCES.split(guardrail or ""):
        for clause in _CLAUSES.split(sentence.strip()):
            clause = clause.strip().rstrip(".!")
            if len(clause) > 3:
                out.append(clause)
    return out


def _sample(name: str, spec: Mapping[str, Any]) -> str:
    example = _EXAMPLE.search(str(spec.get("description") or ""))
    if example:
        return example.group(1)
    if spec.get("enum"):
        return str(spec["enum"][0])
    words = name.lower()
    kind = spec.get("type", "string")
    if "email" in words:
        return SAMPLE_EMAIL
    if "order" in words:
        return "A-10023"
    if "date" in words:
        return "2026-12-24"
    if kind in ("number", "integer") or "amount" in words:
        return "20"
    return "true" if kind == "boolean" else "example"


def _request(name: str, parameters: Mapping[str, Any], uses_email: bool) -> _Request:
    phrase = re.sub(r"[^\w\s'-]+", "", name).strip().lower() or "use this action"
    request = _Request(f"I'd like to {phrase}.")
    for arg, spec in parameters.items():
        spec = spec if isinstance(spec, Mapping) else {}
        if not (spec.get("required") or spec.get("enum")):
            continue
        value = _sample(arg, spec)
        words = arg.replace("_", " ")
        request.facts[arg] = (
            f"The {words} is {value}." if spec.get("enum") else (f"My {words} is {value}.")
        )
        request.arguments[arg] = value
    if uses_email and not any("email" in a for a in request.facts):
        request.facts["lead.email"] = f"My email is {SAMPLE_EMAIL}."
        request.variables["lead.email"] = SAMPLE_EMAIL
    return request


def _missing(request: _Request, clause: str) -> tuple[str, dict[str, str]] | None:
    found = _MISSING.search(clause)
    if not found:
        return None
    thing = set(re.findall(r"[a-z]+", (found.group("a") or found.group("b") or "").lower()))
    for key in request.facts:
        if set(re.findall(r"[a-z]+", key.lower().replace("_", " "))) & thing - {"the", "lead"}:
            variables = {k: v for k, v in request.variables.items() if k != key}
            return request.text(without=key), variables
    return None


_Rule = Callable[[_Request, "re.Match[str]"], str]


def _general(request: _Request, found: re.Match[str]) -> str:
    return "I have a general question: what are your opening hours?"


def _policy(request: _Request, found: re.Match[str]) -> str:
    details = " ".join(request.facts.values())
    return f"What is your {found.group('x').lower()} policy? {details}".strip()


def _older(request: _Request, found: re.Match[str]) -> str:
    return f"{request.text()} It was delivered {int(found.group('n')) + 15} days ago."


def _only_asks(request: _Request, found: re.Match[str]) -> str:
    word = found.group("x").lower()
    return f"Could you tell me how {word if word.endswith('s') else word + 's'} work?"


def _problem(request: _Request, found: re.Match[str]) -> str:
    return f"I'm an existing customer and my order A-10023 is broken. {request.text()}"


def _undelivered(request: _Request, found: re.Match[str]) -> str:
    return f"{request.text()} My order has not been delivered yet."


_RULES: tuple[tuple[re.Pattern[str], _Rule], ...] = (
    (re.compile(r"general question", _I), _general),
    (_POLICY, _policy),
    (_OLDER, _older),
    (_UNLESS_ASKED, _only_asks),
    (re.compile(r"support problem|existing customer", _I), _problem),
    (re.compile(r"not (?:been |yet )?(?:delivered|arrived)", _I), _undelivered),
)
"""(condition, how its SKIP message is written), the first match wins."""


def _skip(request: _Request, clause: str) -> ActionCase:
    missing = _missing(request, clause)
    if missing is not None:
        message, variables = missing
    else:
        variables = dict(request.variables)
        message = f"{request.text()} [Rewrite this message so that it matches: {clause}]"
        for pattern, write in _RULES:
            found = pattern.search(clause)
            if found:
                message = write(request, found)
                break
    return ActionCase(
        name=f"skip: {clause}"[:80], message=message, expect="skip", variables=variables
    )


def starter_cases(
    name: str,
    guardrail: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    uses_email: bool = False,
) -> list[ActionCase]:
    """One SKIP case per guardrail condition and one CALL case, for the operator to edit.

    Args:
        name: The action's display name ("Look up order").
        guardrail: Its "When not to use" text.
        parameters: Its arguments as in a definition (``type``, ``description``, ``enum``,
            ``required``).
        uses_email: Whether its templates use ``{{lead.email}}``.
    """
    request = _request(name, parameters or {}, uses_email)
    cases = [_skip(request, clause) for clause in guardrail_conditions(guardrail)]
    call = ActionCase(
        name="call: the guardrail does not apply",
        message=request.text(),
        expect="call",
        variables=dict(request.variables),
        arguments=dict(request.arguments),
    )
    return [*cases, call]


def starters_for(definition: Mapping[str, Any]) -> list[ActionCase]:
    """:func:`starter_cases` for an action definition (the file format)."""
    parameters = definition.get("parameters")
    return starter_cases(
        str(definition.get("name") or definition.get("tool_name") or ""),
        str(definition.get("when_not_to_use") or ""),
        parameters if isinstance(parameters, Mapping) else {},
        uses_email="lead.email" in json.dumps(definition, default=str),
    )
