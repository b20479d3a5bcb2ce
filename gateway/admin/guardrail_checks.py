"""The Guardrail check of one action: its stored cases, run through ``actiongate eval``'s code.

The cases live in :mod:`gateway.stores.eval_cases`; a check turns them into the suite
``actiongate eval`` would run (:func:`~gateway.evaluation.action_cases.to_suite`) and scores it
with :func:`~gateway.evaluation.run.evaluate` against the chosen agent's real upstream, on the
definitions the gateway serves right now (file and admin edits alike). Like the command, it
builds no executor: the model's first answer is read and no action API is ever sent a request.
"""

from __future__ import annotations

from typing import Any

from gateway.definitions.actions import Action, HttpAction
from gateway.definitions.config import Config
from gateway.engine.workspace import Workspace
from gateway.errors import ConfigError, RequestError
from gateway.evaluation.action_cases import (
    MAX_RUNS,
    ActionCase,
    coerce_arguments,
    parse_cases,
    suite_yaml,
    to_suite,
)
from gateway.evaluation.run import EvalReport, LiveAnswers, evaluate
from gateway.evaluation.starters import starters_for
from gateway.stores.eval_cases import EvalCaseStore

__all__ = ["GuardrailChecks"]


def _not_found(what: str) -> RequestError:
    return RequestError(404, f"{what} not found", code="not_found")


class GuardrailChecks:
    """Cases per action, and running them on an agent that offers the action."""

    def __init__(
        self,
        config: Config,
        workspace: Workspace,
        store: EvalCaseStore,
    ) -> None:
        self._config = config
        self._workspace = workspace
        self.store = store

    def _action(self, tool_name: str) -> Action:
        action = self._workspace.actions.get(tool_name)
        if action is None:
            raise _not_found(f"action {tool_name!r}")
        return action

    async def cases(self, tool_name: str) -> list[ActionCase]:
        """The action's cases (404 for an unknown action)."""
        self._action(tool_name)
        return parse_cases(await self.store.get(tool_name))

    async def put_cases(self, tool_name: str, data: Any) -> list[ActionCase]:
        """Replace the action's cases; 422 naming the case and field that is wrong."""
        action = self._action(tool_name)
        cases = parse_cases(data)
        if isinstance(action, HttpAction):
            types = {name: p.type for name, p in action.parameters.items()}
            cases = coerce_arguments(cases, types)
        await self.store.put(tool_name, [c.model_dump() for c in cases])
        return cases

    def starters(self, tool_name: str) -> list[ActionCase]:
        """Starter cases from the action's guardrail (:mod:`gateway.evaluation.starters`).

        Raises:
            RequestError: 404 for an unknown action, 422 when it has no guardrail.
        """
        action = self._action(tool_name)
        if not (action.when_not_to_use or "").strip():
            raise RequestError(
                422,
                f"when_not_to_use: action {tool_name!r} has no guardrail to make cases from",
                "no_guardrail",
                "when_not_to_use",
            )
        return starters_for(action.model_dump(mode="json", by_alias=True, exclude_none=True))

    def agents_of(self, tool_name: str) -> list[str]:
        """The agents that offer the action to their model, by id."""
        found = []
        for agent_id in sorted(self._workspace.agents):
            view = self._workspace.view(agent_id)
            if view is not None and tool_name in view.actions:
                found.append(agent_id)
        return found

    def _agent(self, tool_name: str, agent: Any) -> str:
        offered = self.agents_of(tool_name)
        if agent in (None, ""):
            if not offered:
                raise RequestError(
                    422,
                    f"agent: no agent offers action {tool_name!r}; enable it on one first",
                    "invalid_agent",
                    "agent",
                )
            return offered[0]
        if not isinstance(agent, str) or agent not in self._workspace.agents:
            raise _not_found(f"agent {agent!r}")
        if agent not in offered:
            raise RequestError(
                422,
                f"agent: {agent!r} does not offer action {tool_name!r} "
                f"(agents that do: {', '.join(offered) or 'none'})",
                "invalid_agent",
                "agent",
            )
        return agent

    @staticmethod
    def _runs(runs: Any) -> int:
        if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= MAX_RUNS:
            raise RequestError(
                422, f"runs: a whole number from 1 to {MAX_RUNS}", "invalid_runs", "runs"
            )
        return runs

    def _served(self) -> Config:
        """The config as served now: the file's settings with the live actions and agents."""
        return self._config.model_copy(
            update={
                "actions": list(self._workspace.actions.values()),
                "agents": list(self._workspace.agents.values()),
            }
        )

    async def run(self, tool_name: str, agent: Any = None, runs: Any = 1) -> EvalReport:
        """Score the action's cases on ``agent`` (default: the first that offers it).

        Raises:
            RequestError: 404 unknown action or agent, 422 no cases, bad runs, or an agent
                that does not offer the action; upstream errors as the proxy reports them.
        """
        self._action(tool_name)
        count = self._runs(runs)
        agent_id = self._agent(tool_name, agent)
        suite = to_suite(tool_name, await self.cases(tool_name), agent=agent_id, runs=count)
        answers = LiveAnswers()
        try:
            return await evaluate(
                suite, self._served(), answers=answers, agent=agent_id, label=agent_id
            )
        except ConfigError as e:
            raise RequestError(422, str(e), "invalid_cases", "cases") from None
        finally:
            await answers.close()

    async def suite_yaml(self, tool_name: str, agent: Any = None, runs: Any = 1) -> str:
        """The action's cases as a suite file ``actiongate eval`` runs."""
        self._action(tool_name)
        agent_id = self._agent(tool_name, agent) if agent else None
        cases = await self.cases(tool_name)
        return suite_yaml(tool_name, cases, agent=agent_id, runs=self._runs(runs))

    async def rename(self, old: str, new: str) -> None:
        """Keep an action's cases when its tool name changes."""
        cases = await self.store.get(old)
        if cases:
            await self.store.put(new, cases)
        await self.store.forget(old)
