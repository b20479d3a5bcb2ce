"""``actiongate eval``: one config, or two side by side (``--compare``, ``--guardrail``).

Variant B of a comparison is ``--compare FILE2`` (another config file), or the same config with
``--guardrail TOOL=TEXT`` / ``--description TOOL=TEXT`` overrides, or both (the overrides apply
to B). The exit status is 1 when the (last) variant misses a threshold of the suite.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.definitions.config import Config, load_config
from gateway.errors import ConfigError
from gateway.evaluation.report import compare_text, report_text
from gateway.evaluation.run import Answers, Cassette, EvalReport, LiveAnswers, evaluate
from gateway.evaluation.suite import Suite, load_suite

__all__ = ["EvalOptions", "override", "run_eval", "run_eval_command"]


def override(config: Config, changes: Sequence[tuple[str, str, str]]) -> Config:
    """A copy of ``config`` with ``(tool, field, text)`` set on its actions.

    Raises:
        ConfigError: an unknown tool name.
    """
    actions = {a.tool_name: a for a in config.actions}
    for tool, name, text in changes:
        if tool not in actions:
            option = "--guardrail" if name == "when_not_to_use" else f"--{name}"
            raise ConfigError(f"{option}: no action {tool!r}")
        actions[tool] = actions[tool].model_copy(update={name: text})
    return config.model_copy(update={"actions": list(actions.values())})


def _pairs(values: Sequence[str] | None, option: str, name: str) -> list[tuple[str, str, str]]:
    out = []
    for item in values or ():
        tool, sep, text = item.partition("=")
        if not sep or not tool.strip():
            raise ConfigError(f"{option} {item!r}: expected TOOL=TEXT")
        out.append((tool.strip(), name, text))
    return out


@dataclass
class EvalOptions:
    """What the command line asked for."""

    suite: Path
    config: Path
    agent: str | None = None
    runs: int | None = None
    compare: Path | None = None
    changes: Sequence[tuple[str, str, str]] = ()
    cassette: Path | None = None
    record: Path | None = None


async def run_eval(options: EvalOptions) -> tuple[EvalReport, EvalReport | None]:
    """Run the suite on config A and, when asked, on variant B."""
    suite: Suite = load_suite(options.suite)
    base = load_config(options.config)
    variants = [(str(options.config), base)]
    if options.compare is not None or options.changes:
        other = load_config(options.compare) if options.compare is not None else base
        label = str(options.compare or options.config)
        if options.changes:
            label += " with " + ", ".join(f"{t}.{n}" for t, n, _ in options.changes)
        variants.append((label, override(other, options.changes)))
    record = Cassette(options.record) if options.record is not None else None
    answers: Answers
    live: LiveAnswers | None = None
    if options.cassette is not None:
        answers = Cassette.load(options.cassette)
    else:
        answers = live = LiveAnswers(record)
    try:
        reports = [
            await evaluate(
                suite, config, answers=answers, agent=options.agent, runs=options.runs, label=label
            )
            for label, config in variants
        ]
    finally:
        if live is not None:
            await live.close()
    return reports[0], reports[1] if len(reports) > 1 else None


def run_eval_command(ns: Any) -> int:
    """The ``eval`` subcommand: print the report; 1 when a threshold is not met."""
    changes = _pairs(ns.guardrail, "--guardrail", "when_not_to_use")
    changes += _pairs(ns.description, "--description", "description")
    options = EvalOptions(
        suite=Path(ns.suite),
        config=Path(ns.config),
        agent=ns.agent,
        runs=ns.runs,
        compare=Path(ns.compare) if ns.compare else None,
        changes=changes,
        cassette=Path(ns.cassette) if ns.cassette else None,
        record=Path(ns.record) if ns.record else None,
    )
    a, b = asyncio.run(run_eval(options))
    if ns.json:
        data = a.to_dict()
        if b is not None:
            data["compare"] = b.to_dict()
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(report_text(a) if b is None else compare_text(a, b))
    return 0 if (b or a).passed else 1
