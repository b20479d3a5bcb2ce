"""Serve an agent's ``http`` actions as MCP tools (README, "Replay tests, OpenAPI import, MCP").

``actiongate mcp FILE --agent ID`` speaks MCP over stdio (:func:`serve_stdio`); ``actiongate
serve`` also answers MCP over streamable HTTP at ``/mcp/{agent_id}`` (:mod:`gateway.mcp.http`).
Both use one low-level :class:`mcp.server.lowlevel.Server` (tools are data here, not Python
functions) built by :func:`build_server`:

- ``tools/list`` returns the agent's enabled ``http`` actions exactly as ``export --format mcp``
  prints them (:func:`adapters.mcp.to_mcp_tools`): name, description with the marked
  ``When NOT to use`` guardrail, input schema, and the annotations ``readOnlyHint`` (GET),
  ``destructiveHint`` (POST, PUT, PATCH, DELETE) and ``idempotentHint`` (GET, PUT, DELETE);
  then the agent's forms, their fields as optional prefill arguments.
- ``tools/call`` runs through the same executor, egress guard and execution log as the proxy
  (:mod:`gateway.mcp.calls`). The conversation has ``agent.id`` and channel ``mcp``. When the
  client supports elicitation (:mod:`gateway.mcp.elicitation`), a missing ``lead.*`` value is
  asked of its user, a write action asks for consent, and a form asks for its fields; a declined
  question sends nothing and is logged ``declined``. Without elicitation a missing value is
  refused naming it, a write runs at once (the client asks its user, guided by
  ``destructiveHint``) and a form is refused.
- The result is the text the model would read in a chat (``Execution.content``) as one text
  block, with ``isError`` for every outcome but ``success``; the record is marked injected, as
  the client hands the result to its model. An unknown name is an error result naming it, and
  logged as ``rejected``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.stdio import stdio_server
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    InputRequiredResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
)

from adapters.mcp import to_mcp_tool
from gateway.definitions.actions import FormAction, HttpAction
from gateway.definitions.config import Config
from gateway.definitions.tools import to_tool_definitions
from gateway.engine.context import Conversation
from gateway.engine.executor import Execution, Executor
from gateway.engine.runtime import Runtime, open_runtime
from gateway.engine.workspace import AgentView, Workspace
from gateway.errors import ConfigError
from gateway.ids import random_hex
from gateway.mcp.calls import run_form, run_http
from gateway.mcp.elicitation import Asker, InputNeeded, asker_for, input_required
from gateway.version import __version__

__all__ = [
    "CHANNEL",
    "Caller",
    "CallerLookup",
    "agent_view",
    "build_server",
    "call_tool",
    "list_tools",
    "serve_stdio",
]

_T = TypeVar("_T")
_LISTED = frozenset({"http", "form"})
CHANNEL = "mcp"
"""``conversation.channel`` of every MCP execution."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who an MCP request acts for: the agent as it is now, its conversation, the executor."""

    agent: AgentView
    conversation: Conversation
    executor: Executor


CallerLookup = Callable[[ServerRequestContext[Any]], Caller]
"""Finds the :class:`Caller` of one request (fixed on stdio, per HTTP request on HTTP)."""


def list_tools(agent: AgentView) -> ListToolsResult:
    """The ``tools/list`` result: the agent's enabled ``http`` actions, then its forms."""
    definitions = to_tool_definitions(agent.actions.values())
    tools = [to_mcp_tool(d) for d in definitions if d.kind in _LISTED]
    return ListToolsResult.model_validate({"tools": tools})


async def call_tool(
    caller: Caller,
    name: str,
    arguments: Mapping[str, Any] | None,
    asker: Asker | None = None,
) -> CallToolResult:
    """Run one ``tools/call`` and return what the model reads; never raises for a bad call.

    Raises:
        InputNeeded: On 2026-07-28 only, before anything is sent: the user must be asked first.
    """
    asker = asker or Asker()
    executor, conversation = caller.executor, caller.conversation
    call_id = f"mcp_{random_hex(12)}"
    action = caller.agent.actions.get(name)
    execution: Execution | None
    if isinstance(action, HttpAction):
        execution = await _shielded(
            run_http(executor, conversation, action, arguments, call_id, asker)
        )
        content = execution.content
    elif isinstance(action, FormAction):
        content, execution = await _shielded(
            run_form(executor, conversation, action, arguments, call_id, asker)
        )
    else:
        shown = name[:64]
        reason = f"there is no tool named {shown!r}"
        if action is not None:
            reason = f"{shown!r} is a {action.type} action, which only the chat widget can show"
        execution = executor.refuse(shown or "(none)", reason, conversation, tool_call_id=call_id)
        content = execution.content
    if execution is not None:
        await executor.mark_injected(execution, content)
    return CallToolResult(
        content=[TextContent(type="text", text=content)],
        is_error=execution is not None and not execution.ok,
    )


async def _shielded(work: Coroutine[Any, Any, _T]) -> _T:
    """Await ``work`` so that a client that cancels cannot cut an action off before it is logged.

    The user's answers are awaited inside too: a cancelled call's elicitation ends with it.
    """
    return await asyncio.shield(asyncio.ensure_future(work))


def build_server(lookup: CallerLookup) -> Server[Any]:
    """The MCP server: ``tools/list`` and ``tools/call`` for whoever ``lookup`` names."""

    async def on_list_tools(
        ctx: ServerRequestContext[Any], _params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return list_tools(lookup(ctx).agent)

    async def on_call_tool(
        ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await call_tool(
                lookup(ctx), params.name, params.arguments, asker_for(ctx, params)
            )
        except InputNeeded as needed:
            return input_required(needed)

    server: Server[Any] = Server(
        "actiongate",
        version=__version__,
        instructions="Custom Actions: each tool is one HTTP request to the company's API.",
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
    # Seals the 2026-07-28 requestState (the answers given so far) under a process-local key.
    boundary = RequestStateBoundary(RequestStateSecurity.ephemeral(), default_audience="actiongate")
    server.middleware.append(boundary)
    return server


def agent_view(workspace: Workspace, agent_id: str) -> AgentView:
    """Return the agent's view.

    Raises:
        ConfigError: No such agent; the message lists the agents there are.
    """
    view = workspace.view(agent_id)
    if view is None:
        known = ", ".join(workspace.agents) or "none"
        raise ConfigError(f"unknown agent {agent_id!r} (agents: {known})")
    return view


async def serve_stdio(config: Config, agent_id: str, *, database: str | None = None) -> None:
    """Serve one agent's actions over stdin/stdout until the client closes the connection.

    The process is one MCP session, so all its calls share one conversation. The server stops
    when stdin closes (the MCP way to end a stdio session); on SIGTERM the execution log is
    flushed first, then the signal takes its default course.

    Raises:
        ConfigError: No agent ``agent_id`` in ``config``.
    """
    view = agent_view(Workspace(config), agent_id)
    runtime = await open_runtime(config, database=database)
    caller = Caller(view, Conversation(agent_id=agent_id, channel=CHANNEL), runtime.executor)
    server = build_server(lambda _ctx: caller)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_flush_on_sigterm, runtime)
            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())
            tg.cancel_scope.cancel()
    finally:
        await runtime.close()


async def _flush_on_sigterm(runtime: Runtime) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            await runtime.logstore.flush()
            break
    # Leaving the receiver restored the default action. Graceful cancellation would wait for
    # stdin: the SDK reads it in a worker thread that a cancellation does not reach.
    signal.raise_signal(signal.SIGTERM)
