"""Replay tests to copy into your project.

Record real conversations once (``actiongate serve --config actiongate.yaml --record
tests/cassettes``, or a script like ``examples/record_cassettes.py``), commit the cassettes,
and these tests replay them through the gateway with the upstream and the action APIs answered
from the files: no network, no credentials. A change that alters which tool runs, the request
it sends, the result the model is given or the final answer fails with a report of every
difference.

Run them with ``pytest examples/test_replay_examples.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.definitions.config import parse_config
from gateway.replay.cassette import load_cassette
from gateway.replay.plugin import areplay_cassette
from gateway.replay.run import ReplayReport

CASSETTES = Path(__file__).parent / "cassettes"
Replay = Callable[..., ReplayReport]


@pytest.mark.parametrize("cassette", sorted(CASSETTES.glob("*.jsonl")), ids=lambda p: p.stem)
def test_recorded_conversation_still_behaves_the_same(
    actiongate_replay: Replay, cassette: Path
) -> None:
    # Fails with the full report when anything differs; the config recorded in the
    # cassette is used unless you pass one (or run pytest with --actiongate-config FILE).
    actiongate_replay(cassette)


def test_confirmed_refund_wrote_the_expected_log_rows(actiongate_replay: Replay) -> None:
    report = actiongate_replay(CASSETTES / "example-refund-confirmed.jsonl")
    rows = [(r.action, r.outcome, r.injected) for r in report.records]
    assert rows == [
        ("submit_refund", "pending_confirmation", False),
        ("submit_refund", "success", True),
    ]
    [refund] = [r for r in report.records if r.outcome == "success"]
    assert refund.request["headers"]["Authorization"] == "[REDACTED]"
    assert "card" in (refund.injected_content or "")
    assert "4242424242424242" not in (refund.injected_content or "")  # response.redact


def test_a_changed_trimming_rule_is_reported(actiongate_replay: Replay) -> None:
    cassette = CASSETTES / "example-order-status.jsonl"
    data: dict[str, Any] = load_cassette(cassette).config or {}
    order = next(a for a in data["actions"] if a["tool_name"] == "look_up_order")
    order["response"]["select"] = "{status: status}"  # the model would lose the delivery date
    report = actiongate_replay(cassette, parse_config(data, environ={}), check=False)
    assert not report.passed
    assert "tool result given to the model" in report.as_text()
    assert "look_up_order" in report.as_text()


async def test_async_tests_can_await_a_replay() -> None:
    report = await areplay_cassette(CASSETTES / "example-account-streamed.jsonl")
    assert report.passed, report.as_text()
    assert [r.action for r in report.records] == ["get_customer_account"]
