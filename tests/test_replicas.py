"""Two ``actiongate serve`` replicas on one PostgreSQL database behave like one gateway.

Replica A and replica B run the same config with ``--db postgresql://.../ag_rep_<random>`` (a
database created for this run and dropped afterwards), in front of one scripted upstream and the
sample customer API. A client may reach either replica on any request, as behind a round-robin
load balancer without sticky sessions:

1. a form answered through A captures ``lead.email``; an action run through B uses it;
2. an admin API change made through A reaches B's proxy without a restart (definitions refresh);
3. the execution log written by both is listed by either;
4. the admin token A generated (no ``ACTIONGATE_ADMIN_TOKEN``) is accepted by B.

The last tests pin gaps found here and fixed since (docs/SCALING.md, "Fixed gaps"): dashboard
sessions across replicas, replicas starting together on an empty database, and definition
changes stamped older than the newest one.

Skipped when PostgreSQL is unreachable (``ACTIONGATE_TEST_PG``), unless ``CI`` and
``ACTIONGATE_REQUIRE_PG`` are set.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import yaml
from openai import OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from sqlalchemy import text
from sqlalchemy.engine import make_url

import gateway.stores.definitions
from examples.scripted_upstream import ScriptedUpstream, running_upstream
from gateway.app import create_app
from gateway.definitions.config import parse_config
from gateway.stores.db import migrate
from gateway.stores.engines import create_engine
from tests.support.gateway import actions as echo_actions
from tests.support.serve import (
    ACTIONGATE,
    ActionAPI,
    Credentials,
    GatewayProcess,
    LoopThread,
    demo_config,
    free_port,
    running_action_api,
)

pytestmark = pytest.mark.postgres

JANE = "jane@example.com"
TOKEN_LINE = re.compile(r"generated admin token \(shown once\): (\S+)")
REFRESH_WAIT_S = 5.0
"""How long a replica may take to pick up another's change (the poll interval is 2 s)."""
POLL_S = 0.1
UNUSED_DATABASE = "sqlite:///must-not-be-created.db"
"""The config's database; ``--db`` must override it (a file appearing means it did not)."""


# --- databases ------------------------------------------------------------------------------


def _sql(pg_url: str, *statements: str) -> None:
    """Run statements outside a transaction (``CREATE/DROP DATABASE`` need that)."""

    async def run() -> None:
        engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                for statement in statements:
                    await connection.execute(text(statement))
        finally:
            await engine.dispose()

    # Callers may be inside a running event loop (an async test's fixtures): use a loop of our own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run()).result()


@contextmanager
def fresh_database(pg_url: str) -> Iterator[str]:
    """``CREATE DATABASE ag_rep_<random>`` beside ``pg_url``'s; yields its URL; drops it after."""
    name = f"ag_rep_{uuid.uuid4().hex[:12]}"
    _sql(pg_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _sql(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_db(pg_url: str) -> Iterator[str]:
    """The URL of an empty PostgreSQL database for one test."""
    with fresh_database(pg_url) as url:
        yield url


# --- replicas -------------------------------------------------------------------------------


def _environ() -> dict[str, str]:
    """This process's environment without an admin token: the replicas must generate one."""
    env = {k: v for k, v in os.environ.items() if k != "ACTIONGATE_ADMIN_TOKEN"}
    return {**env, "PYTHONUNBUFFERED": "1"}


def launch(directory: Path, config_path: Path, database: str) -> GatewayProcess:
    """Start ``actiongate serve --config .. --port .. --db DATABASE`` without waiting for it.

    ``GatewayProcess.output`` is the process's stderr (where a generated token is printed).
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    stderr = directory / f"stderr-{port}.log"
    with (directory / f"stdout-{port}.log").open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [
                str(ACTIONGATE),
                "serve",
                "--config",
                str(config_path),
                "--port",
                str(port),
                "--db",
                database,
            ],
            cwd=directory,
            stdout=out,
            stderr=err,
            env=_environ(),
        )
    return GatewayProcess(process, port, directory, database, directory / "unused.db", stderr)


def start_replica(directory: Path, config_path: Path, database: str) -> GatewayProcess:
    """:func:`launch` and wait for ``/healthz``; a port taken in between is retried."""
    for attempt in range(3):
        replica = launch(directory, config_path, database)
        try:
            replica.wait_ready()
        except RuntimeError:
            if attempt == 2 or "address already in use" not in replica.logs_text():
                raise
        except BaseException:
            replica.stop()
            raise
        else:
            return replica
    raise AssertionError("unreachable")


def generated_tokens(replica: GatewayProcess) -> list[str]:
    """Admin tokens the replica printed as generated."""
    return TOKEN_LINE.findall(replica.logs_text())


@dataclass
class Cluster:
    """Two replicas on one PostgreSQL database, with the servers behind them."""

    a: GatewayProcess
    b: GatewayProcess
    upstream: ScriptedUpstream
    api: ActionAPI
    credentials: Credentials
    servers: LoopThread
    admin_token: str

    def script(self, replies: list[dict[str, Any]]) -> None:
        """Queue upstream replies (on the servers' loop, which reads the queue)."""
        self.servers.call(self.upstream.script, replies)

    def upstream_requests(self) -> list[dict[str, Any]]:
        """Every completion request body the upstream received, oldest first."""
        return cast("list[dict[str, Any]]", self.servers.call(lambda: list(self.upstream.requests)))

    def received(self) -> list[str]:
        """``METHOD raw_path`` of every request the action API received."""
        return cast("list[str]", self.servers.call(self.api.paths))

    def client(self, replica: GatewayProcess) -> OpenAI:
        """An openai SDK client of one replica."""
        return OpenAI(
            base_url=replica.base_url,
            api_key=self.credentials.client_key,
            max_retries=0,
            timeout=20,
        )

    def admin(self, replica: GatewayProcess, token: str | None = None) -> httpx.Client:
        """An admin API client of one replica."""
        return httpx.Client(
            base_url=f"{replica.url}/api",
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            trust_env=False,
            timeout=20,
        )

    def chat(
        self,
        replica: GatewayProcess,
        messages: list[ChatCompletionMessageParam],
        conversation: dict[str, Any],
    ) -> ChatCompletion:
        with self.client(replica) as client:
            return client.chat.completions.create(
                model="support", messages=messages, extra_body={"conversation": conversation}
            )


@pytest.fixture(scope="module")
def cluster(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    credentials = Credentials()
    servers = LoopThread()
    root = tmp_path_factory.mktemp("replicas")
    try:
        upstream = servers.enter(running_upstream(api_key=credentials.upstream_key))
        api = servers.enter(running_action_api(credentials))
        config = demo_config(upstream, api, credentials, UNUSED_DATABASE)
        config_path = root / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        with fresh_database(pg_url) as database:
            a = start_replica(root / "a", config_path, database)
            try:
                # B starts once A has stored its generated token, as a rolling start would.
                b = start_replica(root / "b", config_path, database)
                try:
                    [token] = generated_tokens(a)
                    yield Cluster(a, b, upstream, api, credentials, servers, token)
                finally:
                    status_b = b.stop()
            finally:
                status_a = a.stop()
        assert (status_a, status_b) == (0, 0), a.logs_text() + b.logs_text()
        for name in ("a", "b"):
            assert not (root / name / "must-not-be-created.db").exists(), "--db was ignored"
    finally:
        servers.close()


@pytest.fixture(autouse=True)
def fresh(cluster: Cluster) -> None:
    cluster.servers.call(cluster.upstream.reset)
    cluster.servers.call(cluster.api.received.clear)


def user(content: str) -> ChatCompletionMessageParam:
    return {"role": "user", "content": content}


def said(completion: ChatCompletion) -> ChatCompletionMessageParam:
    return cast("ChatCompletionMessageParam", completion.choices[0].message.to_dict())


def extension(completion: ChatCompletion) -> dict[str, Any]:
    """The ``actiongate`` object of a completion."""
    ext: dict[str, Any] = (completion.model_extra or {})["actiongate"]
    return ext


def call(name: str, arguments: dict[str, Any] | None = None, id: str = "") -> dict[str, Any]:
    """A scripted tool call."""
    return {"name": name, "arguments": arguments or {}, **({"id": id} if id else {})}


def new_conversation(**context: Any) -> dict[str, Any]:
    return {"id": f"rep-{uuid.uuid4().hex[:12]}", **context}


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = REFRESH_WAIT_S) -> Any:
    """Call ``check`` until it returns something truthy; fail naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(POLL_S)


# --- 1. conversation state ------------------------------------------------------------------


def _ask_for_return_form(cluster: Cluster, replica: GatewayProcess) -> tuple[Any, ...]:
    conversation = new_conversation()
    cluster.script(
        [{"tool_calls": [call("return_request", {"order_number": "A-10023"}, id="call_form")]}]
    )
    messages = [user("I want to return order A-10023.")]
    first = cluster.chat(replica, messages, conversation)
    assert first.choices[0].finish_reason == "tool_calls"
    [ui] = extension(first)["ui"]
    assert ui["kind"] == "form" and ui["tool_call_id"] == "call_form"
    values = {"email": JANE, "order_number": "A-10023", "reason": "Damaged"}
    answer: ChatCompletionMessageParam = {
        "role": "tool",
        "tool_call_id": "call_form",
        "content": json.dumps(values),
    }
    return conversation, [*messages, said(first), answer]


def test_form_captured_through_a_is_used_by_an_action_through_b(cluster: Cluster) -> None:
    conversation, messages = _ask_for_return_form(cluster, cluster.a)
    cluster.script([{"content": "Your return label is on its way."}])
    second = cluster.chat(cluster.a, messages, {"id": conversation["id"]})
    assert [e["status_code"] for e in extension(second)["executions"]] == [201]
    assert cluster.received() == ["POST /crm/returns"]

    # The next request of the conversation reaches B, with no lead in it.
    cluster.script(
        [
            {"tool_calls": [call("get_customer_account")]},
            {"content": "You are on the Pro plan."},
        ]
    )
    messages += [said(second), user("And which plan am I on?")]
    third = cluster.chat(cluster.b, messages, {"id": conversation["id"]})
    assert third.choices[0].message.content == "You are on the Pro plan."
    assert [e["outcome"] for e in extension(third)["executions"]] == ["success"]
    assert cluster.received()[-1] == "GET /crm/customers?email=jane%40example.com"


def test_form_asked_through_a_can_be_answered_through_b(cluster: Cluster) -> None:
    conversation, messages = _ask_for_return_form(cluster, cluster.a)
    cluster.script([{"content": "Your return label is on its way."}])
    second = cluster.chat(cluster.b, messages, {"id": conversation["id"]})
    assert second.choices[0].message.content == "Your return label is on its way."
    assert [e["status_code"] for e in extension(second)["executions"]] == [201]
    assert cluster.received() == ["POST /crm/returns"]


# --- 2. definitions -------------------------------------------------------------------------


def offered_by(cluster: Cluster, replica: GatewayProcess) -> dict[str, str]:
    """Ask ``replica`` something; the tools (name: description) it offered the upstream."""
    cluster.chat(replica, [user("Hi")], new_conversation())  # unscripted: the fixed text
    tools = cluster.upstream_requests()[-1].get("tools") or []
    return {t["function"]["name"]: t["function"].get("description", "") for t in tools}


def test_admin_changes_through_a_reach_b_without_a_restart(cluster: Cluster) -> None:
    b_pid = cluster.b.process.pid
    action = {
        "name": "Check Plan",
        "url": f"{cluster.api.base_url}/customers?email={{{{lead.email}}}}",
        "headers": {"Authorization": "Bearer {{secrets.CRM_KEY}}"},
        "when_not_to_use": "Not for billing questions.",
    }
    assert "check_plan" not in offered_by(cluster, cluster.b)
    with cluster.admin(cluster.a) as admin:
        assert admin.post("/actions", json=action).status_code == 201
        assert admin.put("/agents/support/actions/check_plan").status_code == 200
    wait_until(lambda: "check_plan" in offered_by(cluster, cluster.b), "B offers check_plan")

    with cluster.admin(cluster.a) as admin:
        patch = {"when_not_to_use": "Never for refunds."}
        assert admin.patch("/actions/check_plan", json=patch).status_code == 200
    wait_until(
        lambda: "Never for refunds." in offered_by(cluster, cluster.b).get("check_plan", ""),
        "B describes check_plan with the new when_not_to_use",
    )

    # B runs the action A created, with the secret from the shared config.
    cluster.script([{"tool_calls": [call("check_plan")]}, {"content": "Pro."}])
    done = cluster.chat(cluster.b, [user("My plan?")], new_conversation(lead={"email": JANE}))
    assert [(e["action"], e["status_code"]) for e in extension(done)["executions"]] == [
        ("check_plan", 200)
    ]
    assert cluster.received() == ["GET /crm/customers?email=jane%40example.com"]

    with cluster.admin(cluster.a) as admin:
        assert admin.delete("/agents/support/actions/check_plan").status_code == 200
    wait_until(lambda: "check_plan" not in offered_by(cluster, cluster.b), "B stops offering it")
    assert cluster.b.process.pid == b_pid and cluster.b.process.poll() is None


# --- 3. the execution log -------------------------------------------------------------------


def test_logs_written_by_both_are_listed_by_either(cluster: Cluster) -> None:
    conversation = new_conversation(lead={"email": JANE})
    executed: dict[str, str] = {}
    for replica, tool, args in [
        (cluster.a, "get_customer_account", {}),
        (cluster.b, "look_up_order", {"order_number": "A-10023"}),
    ]:
        cluster.script([{"tool_calls": [call(tool, args)]}, {"content": "Done."}])
        done = cluster.chat(replica, [user("Please check.")], conversation)
        [execution] = extension(done)["executions"]
        assert execution["outcome"] == "success"
        executed[execution["id"]] = tool
    cluster.a.wait_log_stored()
    cluster.b.wait_log_stored()

    for replica in (cluster.a, cluster.b):
        with cluster.admin(replica) as admin:
            page = admin.get("/logs", params={"conversation_id": conversation["id"]}).json()
            assert {item["id"]: item["action"] for item in page["items"]} == executed
            for record_id, tool in executed.items():
                record = admin.get(f"/logs/{record_id}").json()
                assert record["action"] == tool and record["conversation_id"] == conversation["id"]
    for replica in (cluster.a, cluster.b):
        log = replica.health()["log"]
        assert log["dropped"] == 0 and log["write_errors"] == 0, log


# --- 4. the admin token ---------------------------------------------------------------------


def test_token_generated_by_a_is_accepted_by_b(cluster: Cluster) -> None:
    assert len(generated_tokens(cluster.a)) == 1  # printed once
    assert generated_tokens(cluster.b) == []  # B found the stored hash instead
    assert cluster.admin_token not in cluster.b.logs_text()
    for replica in (cluster.a, cluster.b):
        with cluster.admin(replica) as admin:
            assert admin.get("/agents").status_code == 200
        with cluster.admin(replica, token=cluster.admin_token + "x") as admin:
            response = admin.get("/agents")
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "authentication_error"


# --- the dashboard --------------------------------------------------------------------------


def dashboard_login(replica: GatewayProcess, token: str) -> httpx.Cookies:
    """Log in to ``replica``'s dashboard as a browser does; the session cookies."""
    with httpx.Client(base_url=replica.url, trust_env=False, timeout=20) as browser:
        page = browser.get("/login")
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match, page.text
        done = browser.post("/login", data={"csrf": match.group(1), "token": token})
        assert done.status_code == 303 and done.headers["location"] == "/overview", done.text
        assert browser.get("/actions").status_code == 200
        return browser.cookies


def test_dashboard_session_from_a_is_valid_on_b(cluster: Cluster) -> None:
    cookies = dashboard_login(cluster.a, cluster.admin_token)
    with httpx.Client(base_url=cluster.b.url, cookies=cookies, trust_env=False) as browser:
        page = browser.get("/actions")
    assert page.status_code == 200, f"{page.status_code} {page.headers.get('location')}"
    assert "Custom Actions" in page.text


def test_replicas_starting_together_agree_on_one_admin_token(
    fresh_db: str, tmp_path: Path, cluster: Cluster
) -> None:
    """A rollout starts N replicas at once on a new database: they must share one token.

    To make the race deterministic, a third connection holds ``SHARE ROW EXCLUSIVE`` on
    ``secrets`` (reads go on, inserts wait) until both replicas have read "no token" and are
    waiting to store theirs.
    """
    config_path = tmp_path / "config.yaml"
    config_path.write_text((cluster.a.directory.parent / "config.yaml").read_text())

    async def start_both(database: str) -> list[GatewayProcess]:
        engine = create_engine(database)
        try:
            await migrate(engine)
            async with engine.begin() as lock:
                await lock.execute(text("LOCK TABLE secrets IN SHARE ROW EXCLUSIVE MODE"))
                replicas = [launch(tmp_path / n, config_path, database) for n in ("a", "b")]
                waiting = text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "JOIN pg_database d ON d.oid = l.database "
                    "WHERE c.relname = 'secrets' AND NOT l.granted "
                    "AND d.datname = current_database()"
                )
                deadline = time.monotonic() + 30
                while (await lock.execute(waiting)).scalar_one() < 2:
                    assert all(r.process.poll() is None for r in replicas), "a replica exited"
                    assert time.monotonic() < deadline, "the replicas never reached the token"
                    await asyncio.sleep(POLL_S)
            return replicas
        finally:
            await engine.dispose()

    replicas = asyncio.run(start_both(fresh_db))
    try:
        for replica in replicas:
            replica.wait_ready()
        printed = [t for r in replicas for t in generated_tokens(r)]
        assert printed, "no replica printed a generated token"
        for token in printed:
            for replica in replicas:
                with cluster.admin(replica, token=token) as admin:
                    assert admin.get("/agents").status_code == 200
    finally:
        for replica in replicas:
            replica.stop()


# --- definitions refresh, in process --------------------------------------------------------


def _behind(delta: timedelta) -> type[datetime]:
    class SkewedClock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> SkewedClock:
            real = datetime.now(tz or UTC) - delta
            return cls.fromtimestamp(real.timestamp(), tz or UTC)

    return SkewedClock


async def test_change_from_a_replica_with_a_slow_clock_reaches_the_others(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", "replica-token")
    headers = {"Authorization": "Bearer replica-token"}
    config = parse_config(
        {
            "upstream": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
            "egress": {"allow": ["127.0.0.1"]},
            # The actions reference secrets.CRM: a missing secret now stops start-up.
            "secrets": {"CRM": "crm-replica-secret"},
            "agents": [{"id": "support"}],
            "actions": echo_actions("http://127.0.0.1:9"),
        },
        environ={},
    )
    app_a = create_app(config, database=fresh_db)
    app_b = create_app(config, database=fresh_db)
    async with (
        app_a.router.lifespan_context(app_a),
        app_b.router.lifespan_context(app_b),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app_a), base_url="http://a", headers=headers
        ) as a,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app_b), base_url="http://b", headers=headers
        ) as b,
    ):
        for tool in ("look_up_order", "get_customer_account"):
            r = await b.patch(f"/api/actions/{tool}", json={"when_not_to_use": "v1"})
            assert r.status_code == 200
        r = await a.get("/api/actions/look_up_order")
        assert r.json()["when_not_to_use"] == "v1"  # A reloaded (admin reads refresh)

        # B's clock is a minute behind (NTP, another host): its write is older than the max.
        with monkeypatch.context() as clock:
            clock.setattr(gateway.stores.definitions, "datetime", _behind(timedelta(minutes=1)))
            r = await b.patch("/api/actions/look_up_order", json={"when_not_to_use": "v2"})
            assert r.status_code == 200
        r = await a.get("/api/actions/look_up_order")
        assert r.json()["when_not_to_use"] == "v2"
