"""Asking the MCP client's user by elicitation, in both eras of the protocol.

A tool call that needs something from the customer (a lead value, a form's fields, consent to a
write) asks a :class:`Question` through an :class:`Asker`:

- handshake era (up to 2025-11-25): the server sends ``elicitation/create`` on the call's own
  channel and waits for the answer (:class:`_SessionAsker`);
- 2026-07-28: there is no back channel; the call ends with an ``InputRequiredResult`` carrying
  the question, and the client retries the call with the answer. Earlier answers travel in the
  ``requestState``, which the SDK's :class:`~mcp.server.request_state.RequestStateBoundary`
  seals (a process-local key), so the retried call sees every answer given so far
  (:class:`_RoundTripAsker`, :func:`input_required`).

A client that did not declare the elicitation capability gets an asker that cannot ask
(``supported`` is false): the call behaves as it did before elicitation existed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp_types import (
    CallToolRequestParams,
    ElicitRequest,
    ElicitRequestFormParams,
    InputRequiredResult,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

__all__ = ["Answer", "Asker", "InputNeeded", "Question", "asker_for", "input_required"]


@dataclass(frozen=True, slots=True)
class Question:
    """One form-mode elicitation: ``key`` names it among a call's questions."""

    key: str
    message: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """The user's answer: ``accept`` (with ``content``), ``decline`` or ``cancel``."""

    action: str
    content: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """Whether the user accepted (and so ``content`` holds the values)."""
        return self.action == "accept"


class InputNeeded(Exception):
    """Raised by a 2026-07-28 asker: the call must end and ask ``question`` first."""

    def __init__(self, question: Question, answers: dict[str, Answer]) -> None:
        super().__init__(question.key)
        self.question = question
        self.answers = answers


class Asker:
    """Cannot ask: the client declared no elicitation support."""

    supported = False

    async def ask(self, question: Question) -> Answer:
        """The user's answer to ``question``."""
        raise RuntimeError("this client cannot be asked")


class _SessionAsker(Asker):
    supported = True

    def __init__(self, ctx: ServerRequestContext[Any]) -> None:
        self._ctx = ctx

    async def ask(self, question: Question) -> Answer:
        result = await self._ctx.session.elicit_form(
            question.message, question.schema, related_request_id=self._ctx.request_id
        )
        return _answer(result.model_dump(mode="json", by_alias=True))


class _RoundTripAsker(Asker):
    supported = True

    def __init__(self, answers: dict[str, Answer]) -> None:
        self._answers = answers

    async def ask(self, question: Question) -> Answer:
        answer = self._answers.get(question.key)
        if answer is None:
            raise InputNeeded(question, self._answers)
        return answer


def _answer(raw: Any) -> Answer:
    """An answer from the wire (anything but a well-formed accept counts as a cancel)."""
    if not isinstance(raw, dict) or raw.get("action") not in {"accept", "decline", "cancel"}:
        return Answer("cancel")
    content = raw.get("content")
    return Answer(str(raw["action"]), dict(content) if isinstance(content, dict) else {})


def _can_elicit(ctx: ServerRequestContext[Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None:
        return False
    # A capability naming neither mode means form mode (the spec's backwards-compatible reading).
    return elicitation.form is not None or elicitation.url is None


def asker_for(ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> Asker:
    """The asker for one ``tools/call``: by the client's capability and the protocol era."""
    if not _can_elicit(ctx):
        return Asker()
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return _SessionAsker(ctx)
    answers: dict[str, Answer] = {}
    if params.request_state:
        try:
            stored = json.loads(params.request_state)
        except ValueError:
            stored = {}
        if isinstance(stored, dict):
            answers = {str(k): _answer(v) for k, v in stored.items()}
    for key, response in (params.input_responses or {}).items():
        answers[key] = _answer(response.model_dump(mode="json", by_alias=True))
    return _RoundTripAsker(answers)


def input_required(needed: InputNeeded) -> InputRequiredResult:
    """End the call by asking ``needed.question``; the answers so far ride in the state."""
    question = needed.question
    request = ElicitRequest(
        params=ElicitRequestFormParams(message=question.message, requested_schema=question.schema)
    )
    state = {k: {"action": a.action, "content": a.content} for k, a in needed.answers.items()}
    return InputRequiredResult(
        input_requests={question.key: request}, request_state=json.dumps(state)
    )
