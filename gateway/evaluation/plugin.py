"""A pytest plugin: run a guardrail eval suite in your own tests (``actiongate_eval``).

Registered by actiongate's ``pytest11`` entry point (``actiongate-eval``); without it, put
``pytest_plugins = ["gateway.evaluation.plugin"]`` in your top-level ``conftest.py``::

    def test_refund_guardrail(actiongate_eval):
        report = actiongate_eval("evals/guardrails.yaml", "actiongate.yaml", runs=3)
        assert report.actions["submit_refund"].false_triggers == 0

A suite whose thresholds are not met fails the test with the report (``check=False`` returns
it instead). With ``cassette=`` the answers come from a recorded file, so the test needs no
network and no model; without it the agent's real upstream is asked, as ``actiongate eval``
does. No action ever runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.definitions.config import Config, load_config
from gateway.evaluation.report import report_text
from gateway.evaluation.run import Answers, Cassette, EvalReport, LiveAnswers, evaluate
from gateway.evaluation.suite import Suite, load_suite

__all__ = ["actiongate_eval", "aevaluate_suite", "evaluate_suite"]

T = TypeVar("T")


async def aevaluate_suite(
    suite: Suite | str | Path,
    config: Config | str | Path,
    *,
    agent: str | None = None,
    runs: int | None = None,
    cassette: str | Path | None = None,
) -> EvalReport:
    """Run ``suite`` against ``config``'s agent and return the report."""
    parsed = suite if isinstance(suite, Suite) else load_suite(suite)
    loaded = config if isinstance(config, Config) else load_config(config)
    label = "config" if isinstance(config, Config) else str(config)
    answers: Answers
    live: LiveAnswers | None = None
    answers = Cassette.load(cassette) if cassette is not None else (live := LiveAnswers())
    try:
        return await evaluate(parsed, loaded, answers=answers, agent=agent, runs=runs, label=label)
    finally:
        if live is not None:
            await live.close()


def _blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion, also from inside a running event loop (an async test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, name="actiongate-eval")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["value"]
    return result


def evaluate_suite(
    suite: Suite | str | Path, config: Config | str | Path, **options: Any
) -> EvalReport:
    """:func:`aevaluate_suite`, blocking (works inside a running event loop too)."""
    return _blocking(aevaluate_suite(suite, config, **options))


@pytest.fixture
def actiongate_eval() -> Callable[..., EvalReport]:
    """``actiongate_eval(suite, config, *, agent=None, runs=None, cassette=None, check=True)``."""

    def run(
        suite: Suite | str | Path,
        config: Config | str | Path,
        *,
        check: bool = True,
        **options: Any,
    ) -> EvalReport:
        report = evaluate_suite(suite, config, **options)
        if check and not report.passed:
            pytest.fail(report_text(report), pytrace=False)
        return report

    return run
