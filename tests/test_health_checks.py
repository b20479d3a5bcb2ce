"""Scheduled health checks per action (issue 15): a real local API that fails and recovers,
dry and live checks, save-time rules, the admin routes, two replicas sharing one schedule,
and checks that stay out of the execution log and keep secrets out of their results."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from gateway.definitions import actions as action_models
from gateway.definitions.config import parse_action, parse_config
from gateway.definitions.validation import validate_action
from gateway.engine.executor import Executor
from gateway.engine.health_schedule import HealthScheduler
from gateway.engine.workspace import Workspace
from gateway.errors import DefinitionError
from gateway.net.egress import EgressPolicy
from gateway.net.outbound import Outbound
from gateway.redaction import Redactor
from gateway.stores.db import health_results, migrate
from gateway.stores.health import HealthStore
from gateway.stores.logs import LogStore
from tests.conftest import Database
from tests.support.action_api import ActionAPI, running_api
from tests.support.gateway import CRM_SECRET, Gateway, running_gateway

TOKEN = "admin-SECRET-token-hc"


class Clock:
    """The scheduler's clock, moved by hand: each interval is one ``advance``."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Replica:
    """One gateway's health parts on a shared database."""

    workspace: Workspace
    scheduler: HealthScheduler
    store: HealthStore
    logstore: LogStore
    disabled: list[str]


@asynccontextmanager
async def replica(
    database: Database, actions: list[dict[str, Any]], clock: Clock
) -> AsyncIterator[Replica]:
    engine = database.engine()
    await migrate(engine)
    config = parse_config(
        {"actions": actions, "secrets": {"CRM": CRM_SECRET}, "egress": {"allow": ["127.0.0.1"]}},
        environ={},
    )
    redactor = Redactor([CRM_SECRET])
    logstore = LogStore(engine, redactor)
    await logstore.start()
    outbound = Outbound(EgressPolicy(["127.0.0.1"]))
    executor = Executor(outbound, secrets=config.secrets, logstore=logstore, redactor=redactor)
    workspace = Workspace(config)
    store = HealthStore(engine)
    disabled: list[str] = []

    async def disable(tool: str) -> None:
        disabled.append(tool)

    scheduler = HealthScheduler(workspace, executor, store, disable=disable, now=clock)
    try:
        yield Replica(workspace, scheduler, store, logstore, disabled)
    finally:
        await outbound.close()
        await logstore.close()


def flaky(api: ActionAPI, **check: Any) -> dict[str, Any]:
    return {
        "name": "Flaky",
        "url": f"{api.base_url}/flaky",
        "retries": 0,  # one check, one request: the API's failures are counted exactly
        "health_check": {"every": 10, **check},
    }


@pytest.fixture
async def api() -> AsyncIterator[ActionAPI]:
    async with running_api() as state:
        yield state


# --- failing, recovering, auto-disable -----------------------------------------------------


async def test_a_failing_api_turns_healthy_and_is_disabled_after_n_failures(
    database: Database, api: ActionAPI, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    api.fail_times = 2
    async with replica(database, [flaky(api, disable_after=2)], clock) as r:
        first = await r.scheduler.tick()
        assert first["flaky"].ok is False and first["flaky"].status_code == 503
        assert "503" in (first["flaky"].error or "")
        assert await r.scheduler.tick() == {}  # not due again within `every`
        assert r.disabled == []
        clock.advance(10)
        with caplog.at_level(logging.WARNING, logger="actiongate.health"):
            assert (await r.scheduler.tick())["flaky"].ok is False
        assert r.disabled == ["flaky"]
        warning = [rec for rec in caplog.records if rec.name == "actiongate.health"]
        assert len(warning) == 1 and "'flaky'" in warning[0].getMessage()
        assert "2 health checks failed" in warning[0].getMessage()
        clock.advance(10)
        healthy = (await r.scheduler.tick())["flaky"]
        assert healthy.ok is True and healthy.status_code == 200 and healthy.error is None
        history = await r.store.history("flaky")
        assert [h.ok for h in history] == [True, False, False]  # newest first
        assert len(api.received) == 3


async def test_without_disable_after_a_failing_action_is_never_disabled(
    database: Database, api: ActionAPI
) -> None:
    clock = Clock()
    api.fail_times = 100
    async with replica(database, [flaky(api)], clock) as r:
        for _ in range(4):
            assert (await r.scheduler.tick())["flaky"].ok is False
            clock.advance(10)
        assert r.disabled == []


async def test_expect_status_decides_what_is_healthy(database: Database, api: ActionAPI) -> None:
    gone = {
        "name": "Gone",
        "url": f"{api.base_url}/status/404",
        "retries": 0,
        "health_check": {"expect_status": [404, 410]},
    }
    async with replica(database, [gone, flaky(api, expect_status=201)], Clock()) as r:
        results = await r.scheduler.tick()
    assert results["gone"].ok is True and results["gone"].status_code == 404
    assert results["flaky"].ok is False and results["flaky"].error == "HTTP 200, expected 201"


# --- dry and live ---------------------------------------------------------------------------


def add_note(api: ActionAPI, **check: Any) -> dict[str, Any]:
    return {
        "name": "Add note",
        "method": "POST",
        "url": f"{api.base_url}/echo/notes",
        "body": {"note": "{{args.note}}", "email": "{{lead.email}}"},
        "parameters": {"note": {"required": True}},
        "health_check": {"args": {"note": "health"}, "vars": {"lead.email": "j@x.io"}, **check},
    }


async def test_a_post_without_live_is_rendered_never_sent(
    database: Database, api: ActionAPI
) -> None:
    async with replica(database, [add_note(api)], Clock()) as r:
        result = (await r.scheduler.tick())["add_note"]
    assert api.received == []
    assert result.dry is True and result.ok is True and result.status_code is None


async def test_a_dry_check_that_cannot_render_fails_with_the_reason(
    database: Database, api: ActionAPI
) -> None:
    action = add_note(api)
    action["url"] = f"{api.base_url}/echo/notes/{{{{lead.account}}}}"
    async with replica(database, [action], Clock()) as r:
        result = (await r.scheduler.tick())["add_note"]
    assert api.received == []
    assert result.ok is False and result.dry is True and "lead.account" in (result.error or "")


async def test_a_post_with_live_true_is_sent(database: Database, api: ActionAPI) -> None:
    async with replica(database, [add_note(api, live=True)], Clock()) as r:
        result = (await r.scheduler.tick())["add_note"]
    assert result.ok is True and result.dry is False and result.status_code == 200
    assert len(api.received) == 1 and b'"note":"health"' in api.last().body.replace(b" ", b"")


# --- not in the log, no secrets -------------------------------------------------------------


async def test_checks_stay_out_of_the_log_and_their_results_hold_no_secret(
    database: Database, api: ActionAPI
) -> None:
    echo = {
        "name": "Secret echo",
        "url": f"{api.base_url}/secret-echo?key={{{{secrets.CRM}}}}",
        "headers": {"Authorization": "Bearer {{secrets.CRM}}"},
        "health_check": {"expect_status": 500},
    }
    failing = {
        "name": "Refused",
        "url": "http://127.0.0.2:1/x?token={{secrets.CRM}}",
        "health_check": {},
    }
    async with replica(database, [echo, failing], Clock()) as r:
        results = await r.scheduler.tick()
        await r.logstore.flush()
        assert (await r.logstore.query())[0] == []
        engine = r.store._engine
        async with engine.connect() as conn:
            rows = (await conn.execute(select(health_results))).all()
    assert api.last().headers["Authorization"] == f"Bearer {CRM_SECRET}"  # really sent
    assert results["secret_echo"].ok is False and results["refused"].ok is False
    assert len(rows) == 2 and CRM_SECRET not in repr(rows)


# --- two replicas, one schedule -------------------------------------------------------------


async def test_two_replicas_run_each_check_once_per_interval(
    database: Database, api: ActionAPI
) -> None:
    clock = Clock()
    actions = [flaky(api)]
    async with replica(database, actions, clock) as a, replica(database, actions, clock) as b:
        per_interval = []
        for _ in range(4):
            before = len(api.received)
            ran = await asyncio.gather(a.scheduler.tick(), b.scheduler.tick())
            again = await asyncio.gather(a.scheduler.tick(), b.scheduler.tick())
            assert again == [{}, {}]
            per_interval.append((len(api.received) - before, sum(len(x) for x in ran)))
            clock.advance(10)
        assert per_interval == [(1, 1)] * 4
        assert len(await a.store.history("flaky")) == 4


@pytest.mark.postgres
async def test_a_replica_skips_the_tick_while_another_holds_the_schedule(
    pg_url: str, api: ActionAPI, tmp_path: Path
) -> None:
    import uuid

    from gateway.stores import health as health_module
    from gateway.stores.engines import create_engine

    schema = f"actiongate_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(pg_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    database = Database("postgres", pg_url, schema=schema)
    try:
        async with replica(database, [flaky(api)], Clock()) as r:
            holder = database.engine()
            async with holder.begin() as conn:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key, hashtext(current_schema()))"),
                    {"key": health_module._LOCK_KEY},
                )
                assert await r.scheduler.tick() == {}
            assert api.received == []
            assert (await r.scheduler.tick())["flaky"].ok is True
    finally:
        await database.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def test_results_are_pruned_to_the_newest_n(database: Database, api: ActionAPI) -> None:
    clock = Clock()
    async with replica(database, [flaky(api)], clock) as r:
        r.store.keep = 3
        for _ in range(5):
            await r.scheduler.tick()
            clock.advance(10)
        history = await r.store.history("flaky")
    assert len(history) == 3 and history[0].time > history[-1].time


# --- save-time rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "field"),
    [
        ({"every": 5}, "health_check.every"),
        ({"every": "5 minutes"}, "health_check.every"),
        ({"expect_status": 700}, "health_check.expect_status"),
        ({"disable_after": 0}, "health_check.disable_after"),
        ({"live": "sometimes"}, "health_check.live"),
        ({"interval": 60}, "health_check.interval"),
        ({"vars": {"email": "j@x.io"}}, "health_check.vars.email"),
        ({"args": {"order": "A-1", "extra": 1}}, "health_check.args.extra"),
        ({"args": {"order": 12}}, "health_check.args.order"),
        ({"args": {}}, "health_check.args.order"),
    ],
)
def test_invalid_health_checks_are_refused_naming_the_field(
    check: dict[str, Any], field: str
) -> None:
    definition = {
        "name": "Order",
        "url": "https://api.example.com/orders/{{args.order}}",
        "parameters": {"order": {"required": True}},
        "health_check": check,
    }
    with pytest.raises(DefinitionError) as raised:
        validate_action(parse_action(definition))
    assert raised.value.field == field and field in str(raised.value)


def test_every_takes_seconds_or_a_duration() -> None:
    base = {"name": "A", "url": "https://api.example.com/a"}
    for every, seconds in [(30, 30), ("30s", 30), ("5m", 300), ("1h", 3600)]:
        action = parse_action({**base, "health_check": {"every": every}})
        assert isinstance(action, action_models.HttpAction) and action.health_check
        assert action.health_check.every == seconds
    action = parse_action({**base, "health_check": {}})
    assert isinstance(action, action_models.HttpAction) and action.health_check
    assert action.health_check.every == 300 and action.health_check.disable_after is None


# --- the admin API and the running app ------------------------------------------------------


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_gateway(tmp_path) as gateway:
        yield gateway


def checked(gw: Gateway, **check: Any) -> dict[str, Any]:
    return {
        "name": "Stock",
        "url": f"{gw.api.base_url}/echo/stock?email={{{{lead.email}}}}",
        "headers": {"Authorization": "Bearer {{secrets.CRM}}"},
        "health_check": {"every": "1m", "vars": {"lead.email": "j@x.io"}, **check},
    }


async def test_health_check_round_trips_through_the_admin_api(gw: Gateway) -> None:
    created = await gw.client.post("/api/actions", json=checked(gw), headers=auth())
    assert created.status_code == 201
    assert created.json()["health_check"]["every"] == 60
    patched = await gw.client.patch(
        "/api/actions/stock", json={"health_check": {"disable_after": 3}}, headers=auth()
    )
    assert patched.status_code == 200
    stored = (await gw.client.get("/api/actions/stock", headers=auth())).json()["health_check"]
    assert stored["disable_after"] == 3 and stored["vars"] == {"lead.email": "j@x.io"}
    bad = await gw.client.post(
        "/api/actions", json={**checked(gw, every=1), "name": "Other"}, headers=auth()
    )
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "health_check.every"


async def test_health_routes_answer_latest_and_history(gw: Gateway) -> None:
    await gw.client.post("/api/actions", json=checked(gw), headers=auth())
    empty = await gw.client.get("/api/actions/stock/health", headers=auth())
    assert empty.status_code == 200 and empty.json() == {"latest": None, "history": []}
    ran = await gw.client.post("/api/actions/stock/health/run", headers=auth())
    assert ran.status_code == 200
    result = ran.json()
    assert set(result) == {"time", "ok", "status_code", "duration_ms", "error", "dry"}
    assert result["ok"] is True and result["status_code"] == 200 and result["dry"] is False
    assert gw.api.last().headers["Authorization"] == f"Bearer {CRM_SECRET}"
    health = (await gw.client.get("/api/actions/stock/health", headers=auth())).json()
    assert health["latest"] == result and health["history"] == [result]
    assert await gw.records(action="stock") == []  # never in the execution log

    for method, path in [("GET", "/health"), ("POST", "/health/run")]:
        missing = await gw.client.request(method, f"/api/actions/nope{path}", headers=auth())
        assert missing.status_code == 404
        anonymous = await gw.client.request(method, f"/api/actions/stock{path}")
        assert anonymous.status_code == 401
    unchecked = await gw.client.post("/api/actions/look_up_order/health/run", headers=auth())
    assert unchecked.status_code == 422 and "health_check" in unchecked.text


async def test_the_running_app_checks_on_schedule_and_disables_a_failing_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    monkeypatch.setattr(action_models, "MIN_HEALTH_EVERY_S", 0.05)
    caplog.set_level(logging.WARNING, logger="actiongate.health")
    async with running_gateway(tmp_path, app_options={"health_tick_s": 0.02}) as gw:
        gw.api.fail_times = 1000
        definition = {
            "name": "Flaky",
            "url": f"{gw.api.base_url}/flaky",
            "retries": 0,
            "health_check": {"every": 0.05, "disable_after": 2},
        }
        assert (await gw.client.post("/api/actions", json=definition, headers=auth())).is_success
        for _ in range(500):
            action = (await gw.client.get("/api/actions/flaky", headers=auth())).json()
            if not action["enabled"]:
                break
            await asyncio.sleep(0.02)
        assert action["enabled"] is False
        health = (await gw.client.get("/api/actions/flaky/health", headers=auth())).json()
        assert len(health["history"]) >= 2 and not any(h["ok"] for h in health["history"][:2])
        assert health["latest"]["status_code"] == 503
    assert any("'flaky' disabled" in r.getMessage() for r in caplog.records)


async def test_a_check_that_cannot_run_does_not_stop_the_schedule(
    database: Database, api: ActionAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    async with replica(database, [flaky(api)], clock) as r:
        calls = 0
        original = r.store.claim_due

        async def broken(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("database gone")
            return await original(*args)

        monkeypatch.setattr(r.store, "claim_due", broken)
        r.scheduler.tick_s = 0.01
        r.scheduler.start()
        try:
            for _ in range(500):
                if api.received:
                    break
                await asyncio.sleep(0.01)
        finally:
            await r.scheduler.close()
    assert calls >= 2 and len(api.received) == 1


async def test_checks_read_definitions_changed_at_run_time(
    database: Database, api: ActionAPI
) -> None:
    clock = Clock()
    async with replica(database, [], clock) as r:
        assert await r.scheduler.tick() == {}
        r.workspace.replace(actions=[parse_action(flaky(api))])
        assert (await r.scheduler.tick())["flaky"].ok is True
    assert len(api.received) == 1
