"""The live set of actions and agents the proxy serves.

Built from the config at start-up. Every change goes through :meth:`Workspace.replace`, which
bumps :attr:`version` and drops the cached tool schemas, so a running proxy picks changes up on
its next request without a restart.

An agent's client keys (``api_keys``) are either clear (a config file's, held in memory only)
or hashes made by :func:`gateway.stores.secrets.hash_client_key` (what the admin API stores in
the database): ``sha256:<salt hex>:<digest hex>``. Both are checked in constant time by
:func:`key_accepted`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.openai import to_openai_tools
from gateway.definitions.actions import Action
from gateway.definitions.config import AgentConfig, Config, UpstreamConfig
from gateway.definitions.tools import to_tool_definitions
from gateway.net.upstream import UpstreamTarget
from gateway.stores.secrets import client_key_matches
from gateway.telemetry import metrics

__all__ = ["AgentView", "Workspace", "agent_accepts", "key_accepted"]


def key_accepted(api_keys: Sequence[str], key: str | None) -> bool:
    """Whether ``key`` is one of ``api_keys`` (clear or hashed); no keys means open.

    Every candidate is compared, so timing does not tell how many keys exist or which matched.
    """
    if not api_keys:
        return True
    if not key:
        return False
    presented = key.encode()
    matched = False
    for candidate in api_keys:
        matched |= client_key_matches(candidate, presented)
    return matched


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent as the proxy needs it: its actions by tool name and their OpenAI tools."""

    config: AgentConfig
    actions: dict[str, Action]
    tools: list[dict[str, Any]]
    upstream: UpstreamTarget

    def accepts(self, key: str | None, origin: str | None = None) -> bool:
        """Whether a client key may use this agent (constant-time comparison).

        Args:
            key: The presented client key.
            origin: The web origin of a cross-site browser request (normalised), if any: a
                widget key is accepted only with one of the agent's ``cors_origins``.
        """
        return agent_accepts(self.config, key, origin)


def agent_accepts(agent: AgentConfig, key: str | None, origin: str | None) -> bool:
    """An agent's key rule: ``api_keys`` anywhere, ``widget_keys`` from its origins only."""
    if not agent.widget_keys:
        return key_accepted(agent.api_keys, key)
    server = bool(agent.api_keys) and key_accepted(agent.api_keys, key)
    from_widget = origin is not None and origin in agent.cors_origins
    # Both lists are always compared, so timing does not tell which kind of key matched.
    widget = key_accepted(agent.widget_keys, key)
    return server or (from_widget and widget)


def _target(default: UpstreamConfig, agent: AgentConfig) -> UpstreamTarget:
    override = agent.upstream
    return UpstreamTarget(
        base_url=(override and override.base_url) or default.base_url,
        api_key=(override and override.api_key) or default.api_key,
        model=(override and override.model) or default.model,
        timeout_s=(override and override.timeout_s) or default.timeout_s,
        api=(override and override.api) or default.api,
    )


class Workspace:
    """Actions and agents, with a cache of each agent's view."""

    def __init__(self, config: Config) -> None:
        self.upstream = config.upstream
        self.version = 0
        self._actions: dict[str, Action] = {}
        self._agents: dict[str, AgentConfig] = {}
        self._views: dict[str, AgentView] = {}
        self._origins: dict[str | None, frozenset[str]] | None = None
        self.replace(actions=config.actions, agents=config.agents)

    def replace(
        self,
        *,
        actions: Iterable[Action] | None = None,
        agents: Iterable[AgentConfig] | None = None,
    ) -> None:
        """Swap in new definitions; cached views are rebuilt lazily."""
        if actions is not None:
            self._actions = {a.tool_name: a for a in actions}
        if agents is not None:
            self._agents = {a.id: a for a in agents}
            if not self._agents:
                # A file of actions only still serves: one agent with every enabled action.
                self._agents = {"default": AgentConfig(id="default", name="Default agent")}
        self._views = {}
        self._origins = None
        self.version += 1
        metrics.set_known(self._agents, self._actions)  # the only values those labels take

    @property
    def actions(self) -> dict[str, Action]:
        """Every action by tool name."""
        return self._actions

    @property
    def agents(self) -> dict[str, AgentConfig]:
        """Every agent by id."""
        return self._agents

    def accepts_anywhere(self, key: str | None, origin: str | None = None) -> bool:
        """Whether some agent accepts ``key``: a front checks this before reading a body.

        The chat front learns the agent only from the body (``model``); refusing a key no agent
        accepts first means an anonymous client cannot make the gateway read a body at all.
        """
        return any(agent_accepts(a, key, origin) for a in self._agents.values())

    def origins(self, agent_id: str | None = None) -> frozenset[str]:
        """The web origins allowed for one agent, or (``None``) for any agent."""
        cache = self._origins
        if cache is None:
            cache = self._origins = {a.id: frozenset(a.cors_origins) for a in self._agents.values()}
            cache[None] = frozenset().union(*cache.values())
        return cache.get(agent_id, frozenset())

    def view(self, agent_id: str) -> AgentView | None:
        """The agent's view, or None when no such agent exists."""
        view = self._views.get(agent_id)
        if view is not None:
            return view
        agent = self._agents.get(agent_id)
        if agent is None:
            return None
        names = agent.actions if agent.actions is not None else list(self._actions)
        enabled = {
            n: self._actions[n] for n in names if n in self._actions and self._actions[n].enabled
        }
        tools: list[dict[str, Any]] = [
            dict(t) for t in to_openai_tools(to_tool_definitions(enabled.values()))
        ]
        view = AgentView(agent, enabled, tools, _target(self.upstream, agent))
        self._views[agent_id] = view
        return view
