"""The live set of actions and agents the proxy serves.

Built from the config at start-up. Every change goes through :meth:`Workspace.replace`, which
bumps :attr:`version` and drops the cached tool schemas, so a running proxy picks changes up on
its next request without a restart.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from adapters.openai import to_openai_tools
from gateway.definitions.actions import Action
from gateway.definitions.config import AgentConfig, Config, UpstreamConfig
from gateway.definitions.tools import to_tool_definitions
from gateway.net.upstream import UpstreamTarget

__all__ = ["AgentView", "Workspace"]


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent as the proxy needs it: its actions by tool name and their OpenAI tools."""

    config: AgentConfig
    actions: dict[str, Action]
    tools: list[dict[str, Any]]
    upstream: UpstreamTarget

    def accepts(self, key: str | None) -> bool:
        """Whether a client key may use this agent (constant-time comparison)."""
        if not self.config.api_keys:
            return True
        if not key:
            return False
        matched = False
        for candidate in self.config.api_keys:
            # Compare with every key, so timing does not tell how many keys exist or which matched.
            matched |= hmac.compare_digest(candidate.encode(), key.encode())
        return matched


def _target(default: UpstreamConfig, agent: AgentConfig) -> UpstreamTarget:
    override = agent.upstream
    return UpstreamTarget(
        base_url=(override and override.base_url) or default.base_url,
        api_key=(override and override.api_key) or default.api_key,
        model=(override and override.model) or default.model,
        timeout_s=(override and override.timeout_s) or default.timeout_s,
    )


class Workspace:
    """Actions and agents, with a cache of each agent's view."""

    def __init__(self, config: Config) -> None:
        self.upstream = config.upstream
        self.version = 0
        self._actions: dict[str, Action] = {}
        self._agents: dict[str, AgentConfig] = {}
        self._views: dict[str, AgentView] = {}
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
        self.version += 1

    @property
    def actions(self) -> dict[str, Action]:
        """Every action by tool name."""
        return self._actions

    @property
    def agents(self) -> dict[str, AgentConfig]:
        """Every agent by id."""
        return self._agents

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
