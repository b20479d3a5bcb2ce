"""Circuit breaker, concurrency cap and conversation rate limit: unit rules with a fake clock,
then through the executor against a real local API (refusals logged, nothing sent)."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.definitions.actions import HttpAction
from gateway.definitions.config import parse_action
from gateway.engine.context import Conversation
from gateway.engine.executor import Executor
from gateway.engine.limits import Limits, LimitsConfig, Permit, SlidingWindow
from gateway.net.egress import EgressPolicy
from gateway.net.outbound import Outbound
from gateway.stores.db import migrate
from gateway.stores.engines import create_engine
from gateway.stores.logs import LogStore
from tests.support.action_api import ActionAPI, running_api


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_opens_after_consecutive_failures_and_trial_recovers() -> None:
    clock = Clock()
    limits = Limits(LimitsConfig(failures=3, cooldown_s=10), clock=clock)
    for _ in range(3):
        permit = await limits.acquire("api", None)
        assert isinstance(permit, Permit)
        await limits.release(permit, failed=True)
    refused = await limits.acquire("api", None)
    assert isinstance(refused, str) and "failing right now" in refused
    clock.now += 10
    trial = await limits.acquire("api", None)
    assert isinstance(trial, Permit) and trial.trial
    assert isinstance(await limits.acquire("api", None), str)  # one trial at a time
    await limits.release(trial, failed=True)  # the trial failed: open again
    assert isinstance(await limits.acquire("api", None), str)
    clock.now += 10
    trial = await limits.acquire("api", None)
    assert isinstance(trial, Permit)
    await limits.release(trial, failed=False)
    assert limits.snapshot()["api"]["circuit"] == "closed"
    assert isinstance(await limits.acquire("api", None), Permit)


async def test_success_resets_the_failure_count() -> None:
    limits = Limits(LimitsConfig(failures=2))
    for failed in (True, False, True):
        permit = await limits.acquire("api", None)
        assert isinstance(permit, Permit)
        await limits.release(permit, failed=failed)
    assert isinstance(await limits.acquire("api", None), Permit)


async def test_concurrency_cap() -> None:
    limits = Limits(LimitsConfig(concurrency=2))
    held = [await limits.acquire("api", None), await limits.acquire("api", None)]
    refused = await limits.acquire("api", None)
    assert isinstance(refused, str) and "at once" in refused
    assert isinstance(await limits.acquire("other", None), Permit)  # per action
    first = held[0]
    assert isinstance(first, Permit)
    await limits.release(first, failed=False)
    assert isinstance(await limits.acquire("api", None), Permit)


async def test_conversation_rate_limit_is_a_sliding_window() -> None:
    clock = Clock()
    limits = Limits(LimitsConfig(rate=3, per_s=60), clock=clock)
    for _ in range(3):
        permit = await limits.acquire("api", "c1")
        assert isinstance(permit, Permit)
        await limits.release(permit, failed=False)
        clock.now += 1
    refused = await limits.acquire("api", "c1")
    assert isinstance(refused, str) and "3 action calls in 60 s" in refused
    assert isinstance(await limits.acquire("api", "c2"), Permit)  # per conversation
    clock.now += 58  # the first call leaves the window
    assert isinstance(await limits.acquire("api", "c1"), Permit)


@pytest.fixture
async def api() -> AsyncIterator[ActionAPI]:
    async with running_api() as state:
        yield state


async def test_conversations_idle_for_a_whole_window_are_forgotten_and_the_rest_kept() -> None:
    # A busy gateway sees a new conversation id on almost every request: the windows of those
    # that went quiet must not pile up (they did, ~940 bytes each, until the 100,000 cap).
    clock = Clock()
    limits = Limits(LimitsConfig(rate=2, per_s=60), clock=clock)
    for n in range(1000):
        permit = await limits.acquire("api", f"old-{n}")
        assert isinstance(permit, Permit)
        await limits.release(permit, failed=False)
    clock.now += 30
    assert isinstance(await limits.acquire("api", "busy"), Permit)
    clock.now += 1
    assert isinstance(await limits.acquire("api", "busy"), Permit)  # its window: 2 in 60 s
    clock.now += 30  # every "old-" window has expired; both of "busy"'s calls have not
    for n in range(400):  # each new key forgets up to four expired ones
        permit = await limits.acquire("api", f"new-{n}")
        assert isinstance(permit, Permit)
        await limits.release(permit, failed=False)
    assert len(limits._calls) == 401  # the memory is what this test is about
    refused = await limits.acquire("api", "busy")
    assert isinstance(refused, str) and "2 action calls in 60 s" in refused


def test_a_window_of_one_event_per_period() -> None:
    # A key's first event is kept as a bare number: the second call must still be counted.
    window: SlidingWindow[str] = SlidingWindow()
    assert window.admit("c", 1, 10.0, now=100.0) is None
    assert window.admit("c", 1, 10.0, now=104.0) == pytest.approx(6.0)
    assert window.admit("c", 1, 10.0, now=110.0) is None  # the first left the window
    assert window.admit("c", 1, 10.0, now=119.5) == pytest.approx(0.5)
    assert window.admit("c", 2, 10.0, now=119.5) is None  # another caller's larger rate
    assert window.admit("c", 2, 10.0, now=119.6) == pytest.approx(0.4)


def test_a_conversation_with_one_call_costs_little_memory() -> None:
    # At a thousand new conversations a second, a minute's window holds 60,000 of them.
    keys = [f"support\x00conv_{n:032x}" for n in range(20_000)]
    window: SlidingWindow[str] = SlidingWindow(clock=lambda: 0.0)
    tracemalloc.start()
    try:
        for n, key in enumerate(keys):
            assert window.admit(key, 30, 60.0, now=n * 1e-3) is None
        per_key = tracemalloc.get_traced_memory()[0] / len(keys)
    finally:
        tracemalloc.stop()
    assert len(window) == len(keys)
    assert per_key < 100  # was ~200 (a list per key in an OrderedDict)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LogStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'l.db'}")
    await migrate(engine)
    log = LogStore(engine)
    await log.start()
    yield log
    await log.close()
    await engine.dispose()


async def test_open_circuit_fails_fast_without_calling_the_api(
    api: ActionAPI, store: LogStore
) -> None:
    outbound = Outbound(EgressPolicy(["127.0.0.1"]))
    ex = Executor(outbound, logstore=store, limits=Limits(LimitsConfig(failures=2)))
    action = parse_action({"name": "Down", "url": f"{api.base_url}/status/500", "retries": 0})
    assert isinstance(action, HttpAction)
    conv = Conversation(id="c1")
    outcomes = [(await ex.execute_action(action, conv, None)).outcome for _ in range(4)]
    assert outcomes == ["http_error", "http_error", "rejected", "rejected"]
    assert len(api.received) == 2  # the last two never reached the API
    await store.flush()
    rejected = (await store.query(outcome="rejected"))[0]
    assert len(rejected) == 2 and "failing right now" in (rejected[0].error or "")
    await outbound.close()


async def test_concurrency_cap_through_the_executor(api: ActionAPI, store: LogStore) -> None:
    outbound = Outbound(EgressPolicy(["127.0.0.1"]))
    ex = Executor(outbound, logstore=store, limits=Limits(LimitsConfig(concurrency=1)))
    slow = parse_action({"name": "Slow", "url": f"{api.base_url}/drip", "timeout_s": 0.3})
    assert isinstance(slow, HttpAction)
    results = await asyncio.gather(
        ex.execute_action(slow, Conversation(id="a"), None),
        ex.execute_action(slow, Conversation(id="b"), None),
    )
    assert sorted(r.outcome for r in results) == ["rejected", "timeout"]
    assert len(api.received) == 1
    await outbound.close()


async def test_the_conversation_rate_is_counted_per_agent(api: ActionAPI, store: LogStore) -> None:
    # Conversations belong to their agent: another agent reusing the id gets its own budget.
    outbound = Outbound(EgressPolicy(["127.0.0.1"]))
    ex = Executor(outbound, logstore=store, limits=Limits(LimitsConfig(rate=2, per_s=60)))
    action = parse_action({"name": "Ok", "url": f"{api.base_url}/status/200"})
    assert isinstance(action, HttpAction)
    victim = Conversation(id="shared", agent_id="support")
    other = Conversation(id="shared", agent_id="open")
    first = [(await ex.execute_action(action, other, None)).outcome for _ in range(3)]
    second = [(await ex.execute_action(action, victim, None)).outcome for _ in range(3)]
    assert first == ["success", "success", "rejected"]
    assert second == ["success", "success", "rejected"]
    assert len(api.received) == 4
    await outbound.close()
