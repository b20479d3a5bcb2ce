"""``actiongate eval``: guardrail evaluation with the scripted model (issue 19).

The scripted upstream's rules read the guardrails they recognise (examples/scripted_upstream.py,
``GUARDRAILS``), so its choices are predictable: removing a guardrail must turn a correct skip
into a false trigger, and the report must say so. Every test also checks that no action API was
reached: an eval never runs an action.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.scripted_upstream import ScriptedUpstream, running_upstream
from gateway.cli.main import main
from gateway.definitions.config import load_config
from gateway.errors import ConfigError
from gateway.evaluation.command import EvalOptions, run_eval
from gateway.evaluation.plugin import aevaluate_suite, evaluate_suite
from gateway.evaluation.suite import parse_suite
from tests.support.action_api import ActionAPI, running_api

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SUITE = EXAMPLES / "guardrails.eval.yaml"
CASES = len(yaml.safe_load(SUITE.read_text())["cases"])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Path, ScriptedUpstream, ActionAPI]]:
    """The demo's config pointed at a rules-mode scripted model and a recording action API."""
    async with running_upstream(rules=True) as upstream, running_api() as api:
        text = (EXAMPLES / "demo.yaml").read_text()
        text = text.replace("http://127.0.0.1:8091/v1", upstream.base_url)
        text = text.replace("http://127.0.0.1:8092", api.base_url)
        config = tmp_path / "demo.yaml"
        config.write_text(text)
        yield config, upstream, api


async def cli(*args: str | Path) -> int:
    """The command line, in a thread: it runs its own event loop."""
    return await asyncio.to_thread(main, ["eval", *map(str, args)])


async def test_the_demo_suite_passes_and_reaches_no_action_api(
    world: tuple[Path, ScriptedUpstream, ActionAPI],
) -> None:
    config, upstream, api = world
    a, b = await run_eval(EvalOptions(SUITE, config))
    assert b is None and a.passed, a.failures
    refund = a.actions["submit_refund"]
    assert (refund.correct_calls, refund.false_triggers, refund.missed) == (1, 0, 0)
    assert refund.correct_skips == 2  # the policy question and "how do refunds work"
    assert a.actions["book_a_demo"].precision == 1.0
    assert a.actions["look_up_order"].recall == 1.0
    assert len(upstream.state.requests) == CASES  # one model call per case, no tool loop
    assert api.received == []  # nothing was sent to any action API


async def test_removing_a_guardrail_turns_skips_into_false_triggers(
    world: tuple[Path, ScriptedUpstream, ActionAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, api = world
    status = await cli(SUITE, "--config", config, "--guardrail", "submit_refund=", "--json")
    data = json.loads(capsys.readouterr().out)
    before, after = data["actions"]["submit_refund"], data["compare"]["actions"]["submit_refund"]
    assert (before["false_triggers"], before["precision"]) == (0, 1.0)
    assert (after["false_triggers"], after["precision"]) == (1, 0.5)
    assert after["failing_cases"] == {"a question about the refund policy": 1}
    assert data["compare"]["passed"] is False and status == 1  # B misses the thresholds
    assert data["actions"]["book_a_demo"] == data["compare"]["actions"]["book_a_demo"]
    assert api.received == []


async def test_adding_a_guardrail_fixes_a_false_trigger(
    world: tuple[Path, ScriptedUpstream, ActionAPI], tmp_path: Path
) -> None:
    config, _, api = world
    loose = tmp_path / "loose.yaml"
    data = yaml.safe_load(config.read_text())
    for action in data["actions"]:
        if action["name"] == "Book a Demo!":
            action["when_not_to_use"] = ""
    loose.write_text(yaml.safe_dump(data))
    a, b = await run_eval(EvalOptions(SUITE, loose, compare=config))
    assert b is not None
    assert a.actions["book_a_demo"].false_triggers == 1 and not a.passed
    assert b.actions["book_a_demo"].false_triggers == 0 and b.passed
    assert api.received == []


async def test_runs_multiply_every_count(world: tuple[Path, ScriptedUpstream, ActionAPI]) -> None:
    config, upstream, _ = world
    one, _ = await run_eval(EvalOptions(SUITE, config, runs=1))
    three, _ = await run_eval(EvalOptions(SUITE, config, runs=3))
    for tool, score in one.actions.items():
        other = three.actions[tool]
        assert other.correct_calls == 3 * score.correct_calls
        assert other.correct_skips == 3 * score.correct_skips
    assert len(three.verdicts) == 3 * CASES
    assert len(upstream.state.requests) == 4 * CASES


async def test_thresholds_set_the_exit_status(
    world: tuple[Path, ScriptedUpstream, ActionAPI], tmp_path: Path
) -> None:
    config, _, _ = world
    strict = yaml.safe_load(SUITE.read_text())
    strict["cases"].append(
        {"name": "vague", "messages": ["Help with my account"], "calls": ["look_up_order"]}
    )
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(strict))
    assert await cli(SUITE, "--config", config) == 0
    assert await cli(path, "--config", config) == 1  # recall of look_up_order drops to 50 %
    strict["thresholds"] = {"actions": {"look_up_order": {"recall": 0.5}}}
    path.write_text(yaml.safe_dump(strict))
    assert await cli(path, "--config", config) == 0


async def test_a_cassette_answers_offline_and_refuses_a_changed_request(
    world: tuple[Path, ScriptedUpstream, ActionAPI], tmp_path: Path
) -> None:
    config, upstream, _ = world
    cassette = tmp_path / "answers.jsonl"
    live, _ = await run_eval(EvalOptions(SUITE, config, record=cassette))
    asked = len(upstream.state.requests)
    replayed, _ = await run_eval(EvalOptions(SUITE, config, cassette=cassette))
    assert len(upstream.state.requests) == asked  # answered from the file
    assert replayed.to_dict()["actions"] == live.to_dict()["actions"]
    with pytest.raises(ConfigError, match="record again against a real model"):
        await run_eval(
            EvalOptions(
                SUITE, config, cassette=cassette, changes=[("submit_refund", "when_not_to_use", "")]
            )
        )


def test_the_committed_cassette_runs_the_example_offline() -> None:
    report = evaluate_suite(
        SUITE, EXAMPLES / "demo.yaml", cassette=EXAMPLES / "guardrails.cassette.jsonl"
    )
    assert report.passed, report.failures


async def test_the_async_helper_runs_on_the_tests_loop(
    world: tuple[Path, ScriptedUpstream, ActionAPI],
) -> None:
    config, _, api = world
    report = await aevaluate_suite(SUITE, load_config(config), runs=2)
    assert report.passed and report.runs == 2
    assert api.received == []


async def test_the_blocking_helper_works_inside_a_running_loop() -> None:
    # Its own loop in a thread: fine for a cassette or a real upstream in another process.
    report = evaluate_suite(
        SUITE, EXAMPLES / "demo.yaml", cassette=EXAMPLES / "guardrails.cassette.jsonl"
    )
    assert report.passed


def test_the_fixture_fails_a_test_below_the_thresholds(pytester: pytest.Pytester) -> None:
    from importlib.metadata import entry_points

    if not any(e.name == "actiongate-eval" for e in entry_points(group="pytest11")):
        pytester.makeconftest('pytest_plugins = ["gateway.evaluation.plugin"]')  # not installed
    pytester.makepyfile(
        f"""
        def test_guardrails(actiongate_eval):
            report = actiongate_eval({str(SUITE)!r}, {str(EXAMPLES / "demo.yaml")!r},
                                     cassette={str(EXAMPLES / "guardrails.cassette.jsonl")!r})
            assert report.actions["submit_refund"].correct_calls == 1

        def test_strict(actiongate_eval, tmp_path):
            import yaml
            suite = yaml.safe_load(open({str(SUITE)!r}))
            suite["cases"][0]["arguments"] = {{"look_up_order": {{"order_number": "A-99999"}}}}
            (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
            actiongate_eval(tmp_path / "s.yaml", {str(EXAMPLES / "demo.yaml")!r},
                            cassette={str(EXAMPLES / "guardrails.cassette.jsonl")!r})
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Thresholds NOT met: look_up_order: argument_mismatches 1 > 0*"])


def test_argument_mismatches_are_counted(tmp_path: Path) -> None:
    from gateway.evaluation.run import judge

    case = parse_suite(
        {
            "cases": [
                {
                    "name": "c",
                    "messages": ["x"],
                    "calls": ["look_up_order"],
                    "arguments": {"look_up_order": {"order_number": "a-10023", "email": "e"}},
                }
            ]
        }
    ).cases[0]
    verdict = judge(case, 0, {"look_up_order": {"order_number": " A-10023 "}}, "", [])
    assert verdict.outcomes == {"look_up_order": "correct_call"}
    assert verdict.mismatches == {"look_up_order": ["email"]}  # case and spaces do not count


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cases": []}, "cases: List should have at least 1 item"),
        (
            {"cases": [{"name": "a", "messages": ["hi"]}]},
            "cases[0] ('a'): Value error, a case needs `calls`, `skips` or `only: true`",
        ),
        (
            {"cases": [{"name": "a", "messages": ["hi"], "calls": ["x"], "skips": ["x"]}]},
            "'x' is in both calls and skips",
        ),
        (
            {"runs": 0, "cases": [{"name": "a", "messages": ["hi"], "calls": ["x"]}]},
            "runs: Input should be greater than or equal to 1",
        ),
        (
            {"cases": [{"name": "a", "messages": ["hi"], "calls": ["x"], "typo": 1}]},
            "cases[0] ('a').typo: Extra inputs are not permitted",
        ),
    ],
)
def test_suite_errors_name_the_case_and_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_suite(data, "s.yaml")
    assert message in str(caught.value)


async def test_an_unknown_action_or_agent_is_named(
    world: tuple[Path, ScriptedUpstream, ActionAPI], tmp_path: Path
) -> None:
    config, _, _ = world
    suite = tmp_path / "s.yaml"
    suite.write_text(
        yaml.safe_dump({"cases": [{"name": "a", "messages": ["hi"], "calls": ["nope"]}]})
    )
    with pytest.raises(ConfigError, match="agent 'support' has no action 'nope'"):
        await run_eval(EvalOptions(suite, config))
    with pytest.raises(ConfigError, match="unknown agent 'ghost'"):
        await run_eval(EvalOptions(SUITE, config, agent="ghost"))
