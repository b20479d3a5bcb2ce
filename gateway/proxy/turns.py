"""One chat-completions request in flight: validation, conversation, and answers to UI calls."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.definitions.actions import ButtonAction, FormAction, HttpAction
from gateway.engine.context import (
    Conversation,
    check_lead,
    check_value,
    new_conversation_id,
    string_values,
)
from gateway.engine.executor import Execution, Executor
from gateway.engine.workspace import AgentView, Workspace
from gateway.errors import RequestError
from gateway.ids import random_hex
from gateway.net.browser import CrossOrigin
from gateway.proxy.interactive import (
    click_button,
    is_form_answer,
    not_shown,
    parse_answer,
    submit_form,
    validate_form,
)
from gateway.proxy.textmode import UI_MODES, text_tools
from gateway.stores.conversations import NO_ROW, ConversationStore, Snapshot, StateChange

__all__ = ["REFUSED_FIELDS", "Turn", "answer_pending", "prepare_turn"]

REFUSED_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "extra_headers",
        "extra_query",
        "extra_body",
        "headers",
        "upstream",
        "custom_llm_provider",
        "organization",
        "deployment_id",
    }
)
_OWN_FIELDS = frozenset({"model", "messages", "tools", "stream", "conversation", "tool_choice"})
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_SENTIMENTS = frozenset({"positive", "neutral", "negative"})
_MAX_RESULTS = 50


@dataclass(slots=True)
class Turn:
    """Everything one request carries through the loop."""

    agent: AgentView
    conversation: Conversation
    state: dict[str, Any]
    loaded_state: bytes
    """``state`` as this turn loaded or last saved it: what its next change is measured from."""
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    client_tools: set[str]
    passthrough: dict[str, Any]
    stream: bool
    include_usage: bool
    tool_choice: Any = None
    created: int = field(default_factory=lambda: int(time.time()))
    response_id: str = ""
    executions: list[Execution] = field(default_factory=list)
    produced: list[dict[str, Any]] = field(default_factory=list)
    ui: list[dict[str, Any]] = field(default_factory=list)
    awaiting_injection: list[Execution] = field(default_factory=list)
    usage: dict[str, int] | None = None
    final: tuple[dict[str, Any], str] = ({}, "stop")
    rounds: int = 0
    ui_text: bool = False
    """The client shows no widgets: forms, buttons and confirmations happen in conversation."""
    waited_s: float = 0.0
    """Time spent waiting for the upstream and for actions (the rest is the gateway's own)."""
    stored: Snapshot = NO_ROW
    """The conversation's row as this turn read or last wrote it (others may have since)."""

    def payload(self, model: str, *, last_round: bool) -> dict[str, Any]:
        """The upstream request for the next round."""
        payload = {**self.passthrough, "model": model, "messages": self.messages}
        if self.stream:
            payload["stream"] = True
        if self.tools:
            payload["tools"] = self.tools
            if last_round:
                payload["tool_choice"] = "none"
            elif self.rounds == 0 and self.tool_choice is not None:
                # A forced choice applies to the first round only, or the loop would never end.
                payload["tool_choice"] = self.tool_choice
        self.rounds += 1
        return payload

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        """A client-bound ``chat.completion.chunk``."""
        if not self.response_id:
            self.response_id = f"chatcmpl-{random_hex(16)}"
        return {
            "id": self.response_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.agent.config.id,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }

    def add_usage(self, usage: Any) -> None:
        """Sum the token usage of every round."""
        if not isinstance(usage, dict):
            return
        total = self.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for key in total:
            value = usage.get(key)
            if isinstance(value, int):
                total[key] += value
        self.usage = total

    def extension(self) -> dict[str, Any]:
        """The ``actiongate`` object of the response."""
        return {
            "conversation_id": self.conversation.id,
            "executions": [
                {
                    "id": e.record.id,
                    "action": e.record.action,
                    "outcome": e.record.outcome,
                    "status_code": e.record.response["status_code"] if e.record.response else None,
                    "duration_ms": e.record.duration_ms,
                }
                for e in self.executions
            ],
            "messages": self.produced,
            "ui": self.ui,
        }

    def remember_result(self, call_id: str, execution: Execution) -> None:
        """Keep a gateway result that went to the client, to repair a history that lacks it."""
        results = self.state.setdefault("results", {})
        results[call_id] = {"content": execution.content}
        while len(results) > _MAX_RESULTS:
            results.pop(next(iter(results)))

    def pending_add(self, call_id: str, pending: dict[str, Any]) -> None:
        """Remember a form, button or confirmation the client must answer."""
        self.state.setdefault("pending", {})[call_id] = pending

    def state_changed(self) -> bool:
        """Whether the conversation state must be saved."""
        if self.conversation.lead or "lead" in self.state:
            self.state["lead"] = self.conversation.lead
        return orjson.dumps(self.state) != self.loaded_state

    def change(self) -> StateChange:
        """What this turn changed since it loaded or last saved the state."""
        return StateChange.between(orjson.loads(self.loaded_state), self.state)


def _fail(message: str, code: str = "invalid_request", param: str | None = None) -> RequestError:
    return RequestError(400, message, code=code, param=param)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _context(body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """Conversation context: the body's ``conversation`` object wins over headers.

    Every value is a bounded string and ``lead`` an object of them; anything else is a 400
    naming the field (:func:`~gateway.engine.context.check_value`).
    """
    given: dict[str, Any] = {
        "id": headers.get("x-conversation-id"),
        "user_id": headers.get("x-user-id"),
        "channel": headers.get("x-channel"),
    }
    supplied = body.get("conversation")
    if supplied is not None:
        if not isinstance(supplied, dict):
            raise _fail("conversation must be an object", param="conversation")
        given.update({k: v for k, v in supplied.items() if v is not None})
    context: dict[str, Any] = {}
    for key, value in given.items():
        if value is None:
            continue
        if key == "lead":
            context[key] = check_lead("conversation.lead", value)
        else:
            context[key] = check_value(f"conversation.{str(key)[:64]}", value)
    if context.get("id") is not None and not 0 < len(context["id"]) <= 255:
        raise _fail("conversation.id must be 1 to 255 characters", param="conversation.id")
    return context


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _fail("messages must be a non-empty list", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise _fail(f"messages[{i}] needs a valid role", param=f"messages[{i}]")
    return [dict(m) for m in messages]


def _client_tools(tools: Any, agent: AgentView) -> tuple[list[dict[str, Any]], set[str]]:
    if tools is None:
        return [], set()
    if not isinstance(tools, list):
        raise _fail("tools must be a list", param="tools")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        name = (tool.get("function") or {}).get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not name:
            raise _fail(f"tools[{i}] needs function.name", param=f"tools[{i}]")
        if name in agent.actions:
            raise _fail(
                f"tool {name!r} clashes with an action of agent {agent.config.id!r}",
                code="tool_name_clash",
                param=f"tools[{i}]",
            )
        names.add(name)
    return list(tools), names


def _agent(
    workspace: Workspace, model: Any, client_key: str | None, cross_origin: CrossOrigin | None
) -> AgentView:
    """The agent ``model`` names, if this client (key, and page origin) may use it."""
    agent = workspace.view(model) if isinstance(model, str) else None
    if agent is None:
        raise RequestError(404, f"unknown model {model!r}: use an agent id", "model_not_found")
    if cross_origin is not None and not cross_origin.allows(agent.config.cors_origins):
        raise RequestError(
            403,
            f"pages on {cross_origin.origin} may not use agent {agent.config.id!r} "
            "(see the agent's cors_origins)",
            "origin_not_allowed",
            kind="permission_error",
        )
    if not agent.accepts(client_key, cross_origin.origin if cross_origin else None):
        raise RequestError(
            401, "invalid client key for this agent", "invalid_api_key", kind="authentication_error"
        )
    return agent


async def prepare_turn(
    workspace: Workspace,
    states: ConversationStore,
    body: Any,
    headers: dict[str, str],
    client_key: str | None,
    cross_origin: CrossOrigin | None = None,
) -> Turn:
    """Validate a request, load its conversation and build the :class:`Turn`.

    Args:
        workspace: The live agents and actions.
        states: Stored conversations.
        body: The parsed JSON body.
        headers: The request headers, lower-cased names.
        client_key: The presented client key.
        cross_origin: Set for a request from a page on another site that the browser guard let
            through: that origin must be allowed for the chosen agent.

    Raises:
        RequestError: what was wrong with the request, with the status to answer.
    """
    if not isinstance(body, dict):
        raise _fail("the request body must be a JSON object")
    for name in sorted(REFUSED_FIELDS & body.keys()):
        raise _fail(f"field {name!r} is not accepted: the gateway chooses the upstream", param=name)
    agent = _agent(workspace, body.get("model"), client_key, cross_origin)
    messages = _check_messages(body.get("messages"))
    client_tools, client_names = _client_tools(body.get("tools"), agent)
    context = _context(body, headers)
    snapshot = NO_ROW
    conversation_id = context.get("id")
    if conversation_id:
        # Keyed by agent too: another agent's conversation of the same id is not this one.
        snapshot = await states.read(conversation_id, agent.config.id)
    else:
        conversation_id = new_conversation_id()
    stored = snapshot.state
    loaded = orjson.dumps(stored)
    lead = {**string_values(stored.get("lead")), **(context.get("lead") or {})}
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    sentiment = context.get("sentiment")
    conversation = Conversation(
        id=conversation_id,
        agent_id=agent.config.id,
        user_id=context.get("user_id") or stored.get("user_id"),
        channel=context.get("channel") or stored.get("channel"),
        lead=lead,
        message=_text(last_user.get("content")) if last_user else "",
        supplied_sentiment=sentiment if sentiment in _SENTIMENTS else None,
    )
    state = orjson.loads(loaded)  # a deep copy: the snapshot stays what the row held
    for key in ("user_id", "channel"):
        if getattr(conversation, key):
            state[key] = getattr(conversation, key)
    if agent.config.system_prompt:
        messages.insert(0, {"role": "system", "content": agent.config.system_prompt})
    _repair_history(messages, state)
    stream_options = body.get("stream_options")
    passthrough = {k: v for k, v in body.items() if k not in _OWN_FIELDS}
    ui_text = _ui_mode(headers, agent) == "text"
    return Turn(
        agent=agent,
        conversation=conversation,
        state=state,
        loaded_state=loaded,
        messages=messages,
        tools=client_tools + (text_tools(agent) if ui_text else agent.tools),
        client_tools=client_names,
        passthrough=passthrough,
        stream=bool(body.get("stream")),
        include_usage=isinstance(stream_options, dict)
        and bool(stream_options.get("include_usage")),
        tool_choice=body.get("tool_choice"),
        ui_text=ui_text,
        stored=snapshot,
    )


def _ui_mode(headers: dict[str, str], agent: AgentView) -> str:
    """``X-Actiongate-UI`` (``widgets`` or ``text``), else the agent's ``ui``."""
    mode = headers.get("x-actiongate-ui")
    if mode is None:
        return agent.config.ui
    mode = mode.strip().lower()
    if mode not in UI_MODES:
        raise _fail(f"header X-Actiongate-UI: {mode[:32]!r} is not one of: {', '.join(UI_MODES)}")
    return mode


def _repair_history(messages: list[dict[str, Any]], state: dict[str, Any]) -> None:
    """Insert stored results for gateway calls the client's history does not answer."""
    results: dict[str, Any] = state.get("results") or {}
    if not results:
        return
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    i = 0
    while i < len(messages):
        m = messages[i]
        i += 1
        if m.get("role") != "assistant":
            continue
        for call in m.get("tool_calls") or []:
            call_id = call.get("id") if isinstance(call, dict) else None
            if call_id in results and call_id not in answered:
                content = results[call_id]["content"]
                messages.insert(i, {"role": "tool", "tool_call_id": call_id, "content": content})
                i += 1


ALREADY_ANSWERED = (
    "This was already answered in another request of this conversation; it was not run again."
)


async def answer_pending(turn: Turn, executor: Executor, states: ConversationStore) -> None:
    """Process tool messages answering this conversation's forms, buttons and confirmations.

    Every form answer is validated before anything runs, so an invalid value (a 422) leaves
    nothing stored and nothing sent. The answered entries are then claimed in the store: when
    two requests answer the same one at once, only the request that claims it runs the action
    (the other tells the model it was already answered), so a refund is never sent twice.
    """
    pending: dict[str, Any] = turn.state.get("pending") or {}
    if not pending:
        return
    answers = [
        m for m in turn.messages if m.get("role") == "tool" and m.get("tool_call_id") in pending
    ]
    checked: dict[str, dict[str, Any]] = {}
    for message in answers:
        entry = pending[message["tool_call_id"]]
        action = turn.agent.actions.get(entry["tool"])
        answer = parse_answer(message["content"])
        if isinstance(action, FormAction) and is_form_answer(action, answer):
            checked[message["tool_call_id"]] = validate_form(action, answer)
    claimed, turn.stored = await states.claim_pending(
        turn.conversation.id,
        turn.agent.config.id,
        [m["tool_call_id"] for m in answers],
        turn.stored,
    )
    for message in answers:
        call_id = message["tool_call_id"]
        entry = pending.pop(call_id)
        if call_id not in claimed:
            message["content"] = ALREADY_ANSWERED
            continue
        action = turn.agent.actions.get(entry["tool"])
        answer = parse_answer(message["content"])
        content, execution = await _answer(
            turn, executor, entry, action, answer, checked.get(call_id), call_id
        )
        message["content"] = content
        if execution is not None:
            turn.executions.append(execution)
            turn.awaiting_injection.append(execution)


async def _answer(
    turn: Turn,
    executor: Executor,
    entry: dict[str, Any],
    action: Any,
    answer: Any,
    values: dict[str, Any] | None,
    call_id: str,
) -> tuple[str, Execution | None]:
    conversation = turn.conversation
    if action is None:
        return f"The action {entry['tool']} is no longer available.", None
    if isinstance(action, FormAction):
        if values is None:
            return not_shown("form", action.title or action.name), None
        return await submit_form(executor, conversation, action, values, call_id)
    if isinstance(action, ButtonAction):
        if not isinstance(answer, dict) or "clicked" not in answer:
            return not_shown("button", action.label), None
        if answer.get("clicked") is not True:
            return f"The customer did not click '{action.label}'.", None
        return await click_button(executor, conversation, action, call_id)
    if isinstance(action, HttpAction):
        if isinstance(answer, dict) and answer.get("confirmed") is True:
            execution = await executor.execute_action(
                action, conversation, entry.get("args_raw"), tool_call_id=call_id
            )
            return execution.content, execution
        shown = isinstance(answer, dict) and "confirmed" in answer
        execution = executor.refuse(
            action.tool_name,
            "the customer declined, so the action was not run"
            if shown
            else "the confirmation could not be shown to the customer, so the action was not "
            "run; ask them in conversation",
            conversation,
            tool_call_id=call_id,
            outcome="declined",
            method=action.method,
            url=action.url,
        )
        return execution.content, execution
    return "The customer's answer could not be used.", None
