"""Running a suite: the model's first answer to each case, judged; no action is ever run.

Each case becomes the request a client would send (its messages and ``conversation``); the
gateway's own turn preparation adds the agent's system prompt and tools, guardrails included, so
the model sees exactly what it would see through the proxy. The first upstream answer is read
for tool calls and nothing else happens: no executor exists here, so no action API, token
endpoint or database is reached. The answer comes from the agent's real upstream, or from a
cassette of earlier answers (``--cassette``; ``--record`` writes one).

Per action and over every case and run that names it: a call the case expects is a *correct
call* or a *missed call*; a call the case says to skip is a *false trigger* or a correct skip.
Precision = correct / (correct + false triggers), recall = correct / (correct + missed), the
false-trigger rate = false triggers / (cases that should skip). Expected arguments are a subset
match: each named argument must equal the model's (strings trimmed, case-insensitive).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from gateway.definitions.config import AgentConfig, Config
from gateway.engine.workspace import AgentView, Workspace
from gateway.errors import ConfigError
from gateway.evaluation.suite import METRICS, Case, Limits, Suite
from gateway.net.upstream import Upstream, UpstreamTarget, completion_message
from gateway.proxy.turns import prepare_turn

__all__ = [
    "ActionScore",
    "Answers",
    "Cassette",
    "EvalReport",
    "LiveAnswers",
    "Verdict",
    "evaluate",
]

_PARALLEL = 4
"""Cases in flight at once against a real upstream."""


class Answers(Protocol):
    """Where the model's answers come from."""

    async def answer(
        self, target: UpstreamTarget, payload: dict[str, Any], run: int
    ) -> dict[str, Any]:
        """The upstream's (Chat Completions shaped) answer to ``payload``, for run ``run``."""


class LiveAnswers:
    """The agent's real upstream, through the gateway's upstream client and dialects."""

    def __init__(self, record: Cassette | None = None) -> None:
        self._upstream = Upstream(max_connections=_PARALLEL)
        self._record = record

    async def answer(
        self, target: UpstreamTarget, payload: dict[str, Any], run: int
    ) -> dict[str, Any]:
        response = await self._upstream.complete(target, payload)
        if self._record is not None:
            self._record.add(payload, run, response)
        return response

    async def close(self) -> None:
        await self._upstream.close()
        if self._record is not None:
            self._record.save()


def request_key(payload: Mapping[str, Any], run: int) -> str:
    """What a cassette answer is filed under: the exact request and the run number."""
    digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{digest}:{run}"


class Cassette:
    """Recorded answers, one JSON object per line: ``{"key", "model", "response"}``.

    Answers are filed under the exact request, so a cassette answers only what was recorded: a
    changed guardrail, description or case is a new request, and asking it is an error that
    says to record again against a real model (a cassette cannot tell what a model would do).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._answers: dict[str, dict[str, Any]] = {}
        self._new: list[dict[str, Any]] = []

    @classmethod
    def load(cls, path: str | Path) -> Cassette:
        cassette = cls(path)
        try:
            lines = cassette.path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the cassette: {e.strerror}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                cassette._answers[entry["key"]] = entry["response"]
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{path}:{number}: not a cassette line") from None
        return cassette

    def add(self, payload: dict[str, Any], run: int, response: dict[str, Any]) -> None:
        key = request_key(payload, run)
        self._answers[key] = response
        self._new.append({"key": key, "model": payload.get("model"), "response": response})

    def save(self) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            for entry in self._new:
                f.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._new.clear()

    async def answer(
        self, target: UpstreamTarget, payload: dict[str, Any], run: int
    ) -> dict[str, Any]:
        found = self._answers.get(request_key(payload, run))
        if found is None:
            raise ConfigError(
                f"{self.path}: no recorded answer for this request (run {run + 1}): the case, "
                "the agent's prompt or an action's description or guardrail changed since it "
                "was recorded; record again against a real model (--record)"
            )
        return found


# --- one case ----------------------------------------------------------------------------------


@dataclass
class Verdict:
    """One run of one case: what the model called and how each named action came out."""

    case: str
    run: int
    called: dict[str, Any]
    """Tool name -> the arguments of its first call (parsed JSON, or the raw string)."""
    text: str
    outcomes: dict[str, str] = field(default_factory=dict)
    """Action -> ``correct_call``, ``missed``, ``false_trigger`` or ``correct_skip``."""
    mismatches: dict[str, list[str]] = field(default_factory=dict)
    """Action -> the expected arguments the model got wrong (or left out)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "run": self.run + 1,
            "called": self.called,
            "text": self.text,
            "outcomes": self.outcomes,
            "argument_mismatches": self.mismatches,
        }


class _NoStates:
    """A conversation store that holds nothing: eval cases carry their own variables."""

    async def load(self, conversation_id: str, agent_id: str) -> dict[str, Any] | None:
        return None


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and isinstance(actual, str):
        return expected.strip().casefold() == actual.strip().casefold()
    return bool(expected == actual)


def judge(case: Case, run: int, called: dict[str, Any], text: str, tools: Sequence[str]) -> Verdict:
    """Compare what the model did with what ``case`` expects."""
    verdict = Verdict(case.name, run, called, text)
    skips = set(case.skips) | ({t for t in tools if t not in case.calls} if case.only else set())
    for tool in case.calls:
        verdict.outcomes[tool] = "correct_call" if tool in called else "missed"
        expected = case.arguments.get(tool)
        if expected and tool in called:
            got = called[tool] if isinstance(called[tool], dict) else {}
            wrong = [k for k, v in expected.items() if not _same(v, got.get(k))]
            if wrong:
                verdict.mismatches[tool] = wrong
    for tool in sorted(skips):
        verdict.outcomes[tool] = "false_trigger" if tool in called else "correct_skip"
    return verdict


def _calls(message: Mapping[str, Any]) -> dict[str, Any]:
    calls: dict[str, Any] = {}
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        raw = function.get("arguments")
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            args = raw
        calls.setdefault(function["name"], args)
    return calls


async def run_case(
    workspace: Workspace, agent: AgentView, case: Case, run: int, answers: Answers
) -> Verdict:
    """Send one case the way the proxy would, read the first answer, judge it."""
    body: dict[str, Any] = {"model": agent.config.id, "messages": case.messages}
    if case.conversation:
        body["conversation"] = case.conversation
    turn = await prepare_turn(workspace, _NoStates(), body, {}, None)  # type: ignore[arg-type]
    payload = turn.payload(agent.upstream.model, last_round=False)
    message = completion_message(await answers.answer(agent.upstream, payload, run))
    tools = [t["function"]["name"] for t in agent.tools]
    content = message.get("content")
    return judge(case, run, _calls(message), content if isinstance(content, str) else "", tools)


# --- the report --------------------------------------------------------------------------------


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class ActionScore:
    """One action over the whole suite."""

    correct_calls: int = 0
    false_triggers: int = 0
    missed: int = 0
    correct_skips: int = 0
    argument_mismatches: int = 0
    failing: dict[str, int] = field(default_factory=dict)
    """Case name -> runs in which this action came out wrong there."""

    def add(self, verdict: Verdict, tool: str) -> None:
        outcome = verdict.outcomes[tool]
        counter = {
            "correct_call": "correct_calls",
            "false_trigger": "false_triggers",
            "missed": "missed",
            "correct_skip": "correct_skips",
        }[outcome]
        setattr(self, counter, getattr(self, counter) + 1)
        wrong = outcome in ("false_trigger", "missed") or tool in verdict.mismatches
        self.argument_mismatches += tool in verdict.mismatches
        if wrong:
            self.failing[verdict.case] = self.failing.get(verdict.case, 0) + 1

    @property
    def precision(self) -> float | None:
        return _ratio(self.correct_calls, self.correct_calls + self.false_triggers)

    @property
    def recall(self) -> float | None:
        return _ratio(self.correct_calls, self.correct_calls + self.missed)

    @property
    def false_trigger_rate(self) -> float | None:
        return _ratio(self.false_triggers, self.false_triggers + self.correct_skips)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "false_trigger_rate": self.false_trigger_rate,
            "correct_calls": self.correct_calls,
            "false_triggers": self.false_triggers,
            "missed": self.missed,
            "correct_skips": self.correct_skips,
            "argument_mismatches": self.argument_mismatches,
            "failing_cases": self.failing,
        }

    def below(self, limits: Limits) -> list[str]:
        """The limits this score does not meet, as ``precision 0.50 < 0.90``."""
        found: list[str] = []
        for name in METRICS:
            limit = getattr(limits, name)
            value = getattr(self, name)
            if limit is None or value is None:
                continue
            at_most = name in ("false_trigger_rate", "argument_mismatches")
            if (value > limit) if at_most else (value < limit):
                found.append(f"{name} {value:g} {'>' if at_most else '<'} {limit:g}")
        return found


@dataclass
class EvalReport:
    """Scores per action, every run of every case, and the thresholds not met."""

    label: str
    runs: int
    actions: dict[str, ActionScore]
    verdicts: list[Verdict]
    failures: list[str]
    thresholds_set: bool = False

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.label,
            "runs": self.runs,
            "passed": self.passed,
            "threshold_failures": self.failures,
            "actions": {tool: score.to_dict() for tool, score in self.actions.items()},
            "cases": [v.to_dict() for v in self.verdicts],
        }


def score(suite: Suite, verdicts: list[Verdict], label: str, runs: int) -> EvalReport:
    """Aggregate verdicts per action and check the suite's thresholds."""
    actions = {tool: ActionScore() for tool in suite.mentioned()}
    for verdict in verdicts:
        for tool in verdict.outcomes:
            actions.setdefault(tool, ActionScore()).add(verdict, tool)
    failures = [
        f"{tool}: {problem}"
        for tool, action_score in actions.items()
        for problem in action_score.below(suite.thresholds.for_action(tool))
    ]
    limits = suite.thresholds
    set_any = any(getattr(limits, m) is not None for m in METRICS) or bool(limits.actions)
    return EvalReport(label, runs, actions, verdicts, failures, set_any)


def _agent(config: Config, agent_id: str | None) -> tuple[Workspace, AgentView]:
    """The agent's view, its client keys dropped (an eval runs with the config file in hand)."""
    agents = config.agents or [AgentConfig(id="default", name="Default agent")]
    wanted = agent_id or (agents[0].id if len(agents) == 1 else None)
    if wanted is None:
        names = ", ".join(a.id for a in agents)
        raise ConfigError(f"the config has several agents ({names}): pick one with --agent")
    keyless = [
        a.model_copy(update={"api_keys": [], "widget_keys": []}) if a.id == wanted else a
        for a in agents
    ]
    workspace = Workspace(config.model_copy(update={"agents": keyless}))
    view = workspace.view(wanted)
    if view is None:
        raise ConfigError(f"unknown agent {wanted!r} (agents: {', '.join(a.id for a in agents)})")
    return workspace, view


def _check_names(suite: Suite, view: AgentView) -> None:
    tools = {t["function"]["name"] for t in view.tools}
    for case in suite.cases:
        for tool in [*case.calls, *case.skips]:
            if tool not in tools:
                known = ", ".join(sorted(tools)) or "none"
                raise ConfigError(
                    f"case {case.name!r}: agent {view.config.id!r} has no action {tool!r} "
                    f"(its tools: {known})"
                )


async def evaluate(
    suite: Suite,
    config: Config,
    *,
    answers: Answers,
    agent: str | None = None,
    runs: int | None = None,
    label: str = "config",
) -> EvalReport:
    """Run every case ``runs`` times (default: the suite's) and score the answers.

    Raises:
        ConfigError: an unknown agent or action, or a cassette without the answer.
        UpstreamError: the upstream refused a request.
    """
    workspace, view = _agent(config, agent or suite.agent)
    _check_names(suite, view)
    count = runs or suite.runs
    gate = asyncio.Semaphore(_PARALLEL)

    async def one(case: Case, run: int) -> Verdict:
        async with gate:
            return await run_case(workspace, view, case, run, answers)

    jobs = [one(case, run) for case in suite.cases for run in range(count)]
    verdicts = list(await asyncio.gather(*jobs))
    return score(suite, verdicts, label, count)
