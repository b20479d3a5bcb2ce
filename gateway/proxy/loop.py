"""The tool loop behind ``POST /v1/chat/completions`` (README, "The proxy").

A request is prepared into a :class:`Turn` (:mod:`gateway.proxy.turns`): agent, conversation,
messages
and merged tools. Answers to pending forms, buttons and confirmations are processed first. Then,
round by round, the upstream is called; gateway-side tool calls run in parallel through the
executor and their results are appended; the loop ends on a plain answer, on a call the client
must handle (its own tools, or a form/button/confirmation), or after ``max_rounds`` (the last
round is asked with ``tool_choice: "none"``). Streamed and non-streamed requests share the loop;
in a stream, content deltas are forwarded as they arrive.

Upstream output that does not have OpenAI's shape is an upstream failure (502) before any of its
tool calls runs. Every call that does run ends as an execution, even if running it failed in a
way nobody foresaw: the other calls of the round keep their results.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.definitions.actions import ButtonAction, FormAction, HttpAction, HttpClick, HttpRequest
from gateway.definitions.config import AgentConfig
from gateway.engine.executor import Execution, Executor
from gateway.engine.limits import SlidingWindow
from gateway.engine.rendering import render_request
from gateway.engine.workspace import Workspace
from gateway.errors import ExecutionRefused, RequestError, UpstreamError
from gateway.ids import random_hex
from gateway.net.browser import CrossOrigin
from gateway.net.sse import DONE, ChunkAssembler, sse
from gateway.net.upstream import Upstream, completion_message
from gateway.proxy.interactive import button_spec, confirm_spec, form_spec
from gateway.proxy.textmode import run_in_text
from gateway.proxy.turns import Turn, answer_pending, prepare_turn
from gateway.stores.conversations import ConversationStore
from gateway.telemetry import metrics, tracing

__all__ = ["MAX_CALLS_PER_ROUND", "BrowserClient", "Proxy"]

MAX_CALLS_PER_ROUND = 8

logger = logging.getLogger("actiongate.proxy")


@dataclass(frozen=True, slots=True)
class BrowserClient:
    """Who sent a cross-site browser request: the page's origin and the client's address."""

    origin: CrossOrigin
    address: str


class Proxy:
    """Runs chat completions for the agents of a workspace."""

    def __init__(
        self,
        workspace: Workspace,
        executor: Executor,
        upstream: Upstream,
        states: ConversationStore,
    ) -> None:
        self.workspace = workspace
        self.executor = executor
        self.upstream = upstream
        self.states = states
        self.widget_window: SlidingWindow[tuple[str, str]] = SlidingWindow()

    # --- entry points ---------------------------------------------------------------------

    async def prepare(
        self,
        body: Any,
        headers: dict[str, str],
        client_key: str | None,
        browser: BrowserClient | None = None,
    ) -> Turn:
        """Validate a request and load its conversation; raises RequestError.

        ``browser`` is set for a cross-site request from a web page (a chat widget): its origin
        must be allowed for the agent, and the agent's ``widget_rate`` applies to its address.
        """
        cross = browser.origin if browser is not None else None
        turn = await prepare_turn(self.workspace, self.states, body, headers, client_key, cross)
        if browser is not None:
            self._admit_browser(turn.agent.config, browser)
        await answer_pending(turn, self.executor, self.states)
        return turn

    def _admit_browser(self, agent: AgentConfig, browser: BrowserClient) -> None:
        rate = agent.widget_rate
        if rate is None:
            return
        wait = self.widget_window.admit((agent.id, browser.address), rate.requests, rate.per_s)
        if wait is not None:
            raise RequestError(
                429,
                f"too many requests from this page's address for agent {agent.id!r} "
                f"({rate.requests} per {rate.per_s:g} s); retry later",
                "rate_limited",
                kind="rate_limit_error",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    async def complete(self, turn: Turn) -> dict[str, Any]:
        """Run a non-streamed request to its end."""
        try:
            async for _ in self._rounds(turn):
                pass
        finally:
            await self._save(turn)
        message, finish = turn.final
        return {
            "id": turn.response_id,
            "object": "chat.completion",
            "created": turn.created,
            "model": turn.agent.config.id,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": turn.usage,
            "actiongate": turn.extension(),
        }

    async def deltas(self, turn: Turn) -> AsyncIterator[str]:
        """Run a streamed request for a front of another dialect, yielding text deltas.

        When the iteration ends, ``turn.final``, ``turn.usage`` and ``turn.extension()`` are
        complete and the conversation is saved; errors are raised for the front to answer in
        its own shape.
        """
        try:
            async for event in self._rounds(turn):
                text = event["choices"][0]["delta"].get("content")
                if text:
                    yield text
            # Saved before the front's last event: a client may answer a form at once.
            await self._save(turn)
        finally:
            await asyncio.shield(self._save(turn))

    async def stream(self, turn: Turn) -> AsyncIterator[bytes]:
        """Run a streamed request, yielding SSE bytes.

        Nothing is sent before the upstream's first event, so an upstream that fails at once is
        answered with a plain HTTP error; after that, an error is one ``data: {"error": ...}``
        event and the stream ends.
        """
        started = False
        try:
            async for event in self._rounds(turn):
                if not started:
                    started = True
                    yield sse(turn.chunk({"role": "assistant", "content": ""}))
                yield sse(event)
            if not started:
                started = True
                yield sse(turn.chunk({"role": "assistant", "content": ""}))
            message, finish = turn.final
            for index, call in enumerate(message.get("tool_calls") or []):
                yield sse(turn.chunk({"tool_calls": [{"index": index, **call}]}))
            last = turn.chunk({}, finish_reason=finish)
            if turn.include_usage:
                yield sse(last)
                last = {**turn.chunk({}), "choices": [], "usage": turn.usage}
            last["actiongate"] = turn.extension()
            # Saved before the last event: a client may answer a form the moment it reads it.
            await self._save(turn)
            yield sse(last)
            yield DONE
        except (UpstreamError, RequestError) as e:
            if not started:
                raise
            kind = e.kind if isinstance(e, RequestError) else "upstream_error"
            yield sse({"error": {"message": str(e), "type": kind, "code": e.code}})
        finally:
            await asyncio.shield(self._save(turn))

    # --- the loop -------------------------------------------------------------------------

    async def _rounds(self, turn: Turn) -> AsyncIterator[dict[str, Any]]:
        """Call the upstream round by round; yields client chunks (streaming only)."""
        target = turn.agent.upstream
        max_rounds = turn.agent.config.max_rounds
        for round_no in range(max_rounds + 1):
            payload = turn.payload(target.model, last_round=round_no == max_rounds)
            call = _UpstreamCall(turn, target.model, target.api)
            try:
                if turn.stream:
                    assembler = ChunkAssembler()
                    async for chunk in self.upstream.stream(target, payload):
                        text = assembler.add(chunk)
                        if text:
                            yield turn.chunk({"content": text})
                    message, usage = assembler.message(), assembler.usage
                    turn.response_id = turn.response_id or (assembler.id or "")
                else:
                    response = await self.upstream.complete(target, payload)
                    message = completion_message(response)
                    usage = response.get("usage")
                    turn.response_id = turn.response_id or str(response.get("id") or "")
                call.answered(usage)
            except UpstreamError as e:
                call.status = e.status
                raise
            except BaseException:
                call.status = 499  # the client went away (or the gateway stops) mid-call
                raise
            finally:
                call.done()
            await self._injected(turn)
            turn.add_usage(usage)
            message.setdefault("role", "assistant")
            calls = message.get("tool_calls") or []
            if calls and round_no == max_rounds:
                # The last round was asked with tool_choice "none"; a model that calls tools
                # anyway gets nothing run: max_rounds is a limit on side effects.
                self._refuse_over_limit(turn, calls)
                message = {k: v for k, v in message.items() if k != "tool_calls"}
                turn.final = (message, "length")
                return
            if not calls:
                turn.final = (message, "stop")
                return
            if not await self._run_calls(turn, message, calls):
                turn.final = (message, "tool_calls")
                return

    def _refuse_over_limit(self, turn: Turn, calls: list[dict[str, Any]]) -> None:
        reason = f"the turn limit of {turn.agent.config.max_rounds} tool rounds was reached"
        for call in calls:
            name = str((call.get("function") or {}).get("name") or "(none)")[:64]
            turn.executions.append(
                self.executor.refuse(
                    name, reason, turn.conversation, tool_call_id=str(call.get("id") or "")
                )
            )

    async def _injected(self, turn: Turn) -> None:
        """The upstream accepted a payload carrying these results: the model has them."""
        for execution in turn.awaiting_injection:
            await self.executor.mark_injected(execution)
        turn.awaiting_injection.clear()

    async def _run_calls(
        self, turn: Turn, message: dict[str, Any], calls: list[dict[str, Any]]
    ) -> bool:
        """Handle one round's tool calls; False when the client must act next."""
        agent = turn.agent
        jobs: list[tuple[str, str, asyncio.Task[Execution]]] = []
        texts: dict[str, str] = {}  # text-mode answers that say more than their execution
        notes: list[dict[str, Any]] = []  # text-mode answers with nothing run
        handed_to_client = False
        for position, call in enumerate(calls):
            call_id = str(call.get("id") or f"call_{random_hex(12)}")
            call["id"] = call_id
            function = call.get("function") or {}
            name = str(function.get("name") or "")
            arguments = function.get("arguments")
            if name in turn.client_tools:
                handed_to_client = True
                continue
            action = agent.actions.get(name)
            refusal: Execution | None = None
            if action is None:
                reason = f"there is no tool named {name[:64]!r}"
                refusal = self.executor.refuse(
                    name[:64] or "(none)", reason, turn.conversation, tool_call_id=call_id
                )
            elif position >= MAX_CALLS_PER_ROUND:
                reason = f"at most {MAX_CALLS_PER_ROUND} tool calls run at once; call it again"
                refusal = self.executor.refuse(
                    name, reason, turn.conversation, tool_call_id=call_id
                )
            elif isinstance(action, HttpAction) and not action.needs_confirmation:
                task = asyncio.ensure_future(
                    self.executor.execute_action(
                        action, turn.conversation, arguments, tool_call_id=call_id
                    )
                )
                jobs.append((call_id, name, task))
                continue
            elif turn.ui_text:
                content, refusal = await self._in_text(turn, action, call_id, arguments)
                if refusal is None:
                    notes.append({"role": "tool", "tool_call_id": call_id, "content": content})
                    continue
                texts[call_id] = content
            else:
                refusal = await self._ask_client(turn, action, call_id, arguments)
                if refusal is None:
                    handed_to_client = True
                    continue
            jobs.append((call_id, name, _done(refusal)))
        waiting = time.perf_counter()
        results = await self._results(turn, jobs)
        turn.waited_s += time.perf_counter() - waiting
        tool_messages = []
        for (call_id, _, _), execution in zip(jobs, results, strict=True):
            turn.executions.append(execution)
            content = texts.get(call_id, execution.content)
            tool_messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        tool_messages += notes
        turn.produced += [message, *tool_messages]
        if handed_to_client:
            for (call_id, _, _), execution in zip(jobs, results, strict=True):
                turn.remember_result(call_id, execution)
            return False
        turn.messages += [message, *tool_messages]
        turn.awaiting_injection += list(results)
        return True

    async def _results(
        self, turn: Turn, jobs: list[tuple[str, str, asyncio.Task[Execution]]]
    ) -> list[Execution]:
        """Every job's execution, one that raised included (the others keep their results)."""
        # Shielded: a client that disconnects must not cut an action off before it is logged.
        gathered: list[Execution | BaseException]
        if len(jobs) == 1:  # the usual round: no gathering future around the one task
            try:
                gathered = [await asyncio.shield(jobs[0][2])]
            except Exception as e:  # one call's failure is its outcome, as gather's below
                gathered = [e]
        else:
            gathered = await asyncio.shield(
                asyncio.gather(*(task for _, _, task in jobs), return_exceptions=True)
            )
        return [
            self._unforeseen(turn, call_id, name[:64] or "(none)", result)
            if isinstance(result, BaseException)
            else result
            for (call_id, name, _), result in zip(jobs, gathered, strict=True)
        ]

    def _unforeseen(self, turn: Turn, call_id: str, name: str, error: BaseException) -> Execution:
        """A call whose execution raised: logged and told to the model like any failure."""
        if not isinstance(error, Exception):
            raise error  # cancellation and exits are not results
        logger.error("action %s failed unexpectedly", name, exc_info=error)
        return self.executor.refuse(
            name,
            "the gateway could not run it (an internal error, logged)",
            turn.conversation,
            tool_call_id=call_id,
            outcome="connect_error",
        )

    async def _in_text(
        self, turn: Turn, action: Any, call_id: str, arguments: Any
    ) -> tuple[str, Execution | None]:
        """A form, button or confirmation handled in conversation (``ui: text``)."""
        try:
            return await run_in_text(self.executor, turn.conversation, action, call_id, arguments)
        except Exception as e:  # like a failed job: logged, told to the model
            execution = self._unforeseen(turn, call_id, action.tool_name, e)
            return execution.content, execution

    async def _ask_client(
        self, turn: Turn, action: Any, call_id: str, arguments: Any
    ) -> Execution | None:
        """Turn a call into a form, button or confirmation; an Execution if it was refused."""
        args = _loose_args(arguments)
        pending: dict[str, Any] = {"tool": action.tool_name, "args": args}
        if isinstance(action, FormAction):
            spec, kind = form_spec(action, args), "form"
        elif isinstance(action, ButtonAction):
            url = None
            if not isinstance(action.on_click, HttpClick):
                try:
                    url = render_request(
                        HttpRequest(url=action.on_click.navigate), turn.conversation.values()
                    ).url
                except ExecutionRefused as e:
                    return self.executor.refuse(
                        action.tool_name, str(e), turn.conversation, tool_call_id=call_id
                    )
            spec, kind = button_spec(action, url), "button"
        else:
            assert isinstance(action, HttpAction)
            # Render now, so a missing value is refused before the customer is asked.
            preview = await self.executor.execute_action(
                action, turn.conversation, arguments, tool_call_id=call_id, dry_run=True
            )
            if preview.outcome != "success":
                return preview
            record = self.executor.refuse(
                action.tool_name,
                "waiting for the customer's confirmation",
                turn.conversation,
                tool_call_id=call_id,
                outcome="pending_confirmation",
                method=action.method,
                url=preview.record.request.get("url", ""),
            )
            turn.executions.append(record)
            spec, kind = confirm_spec(action, preview.record.request, args), "confirm"
            pending["args_raw"] = (
                arguments if isinstance(arguments, str) else orjson.dumps(args).decode()
            )
        pending["kind"] = kind
        turn.pending_add(call_id, pending)
        turn.ui.append({"tool_call_id": call_id, "kind": kind, "action": action.tool_name, **spec})
        return None

    async def _save(self, turn: Turn) -> None:
        if turn.state_changed():
            # This turn's change on top of the row as it is now: another request of the
            # conversation may have saved meanwhile, and its changes must stay.
            turn.stored = await self.states.update(
                turn.conversation.id, turn.agent.config.id, turn.change(), turn.stored
            )
            turn.loaded_state = orjson.dumps(turn.state)


def _done(execution: Execution) -> asyncio.Task[Execution]:
    async def value() -> Execution:
        return execution

    return asyncio.ensure_future(value())


def _loose_args(arguments: Any) -> dict[str, Any]:
    """Arguments of a form/button call (prefill only): a JSON object or nothing."""
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str) and arguments.strip():
        try:
            value = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


class _UpstreamCall:
    """One round's call to the LLM API, as metrics and a ``chat {model}`` span see it."""

    __slots__ = ("_span", "_started", "model", "status", "tokens", "turn")

    def __init__(self, turn: Turn, model: str, api: str) -> None:
        self.turn, self.model, self.status = turn, model, 200
        self.tokens: tuple[int, int] | None = None
        """Prompt and completion tokens, once the call answered."""
        self._span = tracing.start_upstream(model, _PROVIDERS.get(api, "openai"))
        self._started = time.perf_counter()

    def answered(self, usage: Any) -> None:
        """The call returned: keep the tokens it reported."""
        usage = usage if isinstance(usage, dict) else {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        self.tokens = (int(prompt or 0), int(completion or 0))

    def done(self) -> None:
        """Record the call, however it ended (``status``: 200, the upstream's error, 499)."""
        seconds = time.perf_counter() - self._started
        self.turn.waited_s += seconds
        agent = self.turn.agent.config.id
        metrics.upstream(agent, self.model, self.status, seconds)
        if self.tokens is not None:
            metrics.tokens(agent, self.model, *self.tokens)
        tracing.end_upstream(self._span, self.status, self.tokens)


_PROVIDERS = {"anthropic": "anthropic", "responses": "openai", "chat": "openai"}
