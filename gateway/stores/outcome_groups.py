"""How the statistics group outcomes: successes, failures, refusals and their reasons.

``success`` is a success; ``http_error``, ``timeout`` and ``connect_error`` are failures (the
API was called); ``blocked``, ``rejected`` and ``declined`` are refusals (nothing was sent).
``pending_confirmation`` is a question to the customer, not an execution: its answer is a
record of its own (the run, or ``declined``), so the statistics count it apart.

A refusal's reason is read off its ``error`` text (:data:`REASON_PREFIXES`). The texts are the
engine's (``engine/limits.py``, ``proxy/turns.py``); a test keeps them in step. Changing the
prefixes changes how stored hours were counted: add a migration that rebuilds them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, case

__all__ = [
    "FAILURES",
    "NAMED_REASONS",
    "OTHER_REASON",
    "OUTCOME_NAMES",
    "REASON_PREFIXES",
    "REFUSALS",
    "SENT",
    "reason_case",
    "reason_of",
]

OUTCOME_NAMES = (
    "success",
    "http_error",
    "timeout",
    "connect_error",
    "blocked",
    "rejected",
    "pending_confirmation",
    "declined",
)
"""Every outcome (the log's ``Outcome``), spelled out here so this module imports nothing."""
FAILURES = frozenset({"http_error", "timeout", "connect_error"})
REFUSALS = frozenset({"blocked", "rejected", "declined"})
SENT = frozenset({"success", *FAILURES})
"""Outcomes whose duration is an API call's: the ones percentiles are taken over."""

REASON_PREFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "rejected": (
        ("rate_limited", "this conversation made "),
        ("circuit_open", "the API behind this action is failing right now"),
        ("concurrency_limit", "too many calls to this action are running at once"),
    ),
    "declined": (
        ("customer_declined", "the customer declined"),
        ("not_shown", "the confirmation could not be shown"),
    ),
}
"""(reason, the text its ``error`` starts with) per refusal outcome."""
OTHER_REASON = {"rejected": "invalid_call", "declined": "declined", "blocked": "egress_policy"}
"""The reason of a refusal no prefix names: a missing value, bad arguments or an unknown tool
(``rejected``); the network policy (``blocked``, always)."""
NAMED_REASONS = tuple(reason for pairs in REASON_PREFIXES.values() for reason, _ in pairs)


def reason_of(outcome: str, error: str | None) -> str | None:
    """The named reason of one record (None: no prefix names it, or not a refusal)."""
    for reason, prefix in REASON_PREFIXES.get(outcome, ()):
        if error is not None and error.startswith(prefix):
            return reason
    return None


def reason_case(outcome: ColumnElement[Any], error: ColumnElement[Any]) -> ColumnElement[Any]:
    """SQL for :func:`reason_of` (NULL where it returns None)."""
    whens = [
        ((outcome == name) & error.startswith(prefix, autoescape=True), reason)
        for name, pairs in REASON_PREFIXES.items()
        for reason, prefix in pairs
    ]
    return case(*whens, else_=None)
