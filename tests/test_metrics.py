"""``GET /metrics`` of a real ``serve``: real traffic, then the scraped series and their values.

One success, one ``http_error``, one ``rejected`` (a missing conversation value) and a streamed
request through the official openai SDK; the token rules of the route; two processes sharing
``PROMETHEUS_MULTIPROC_DIR`` answer one scrape with both processes' counts; JSON logs carry the
request id the response names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples.scripted_upstream import ScriptedUpstream, running_upstream
from tests.support.action_api import ActionAPI, running_api
from tests.support.serve import GatewayProcess, LoopThread, free_port, start_gateway

ADMIN = "metrics-test-admin-token-0123456789"
SCRAPER = "scraper-token-abcdefghijklmnop"
UPSTREAM_KEY = "up-metrics-key-123456"


@dataclass
class Servers:
    loop: LoopThread
    upstream: ScriptedUpstream
    api: ActionAPI

    def script(self, replies: list[dict[str, Any]]) -> None:
        self.loop.call(self.upstream.script, replies)


def config(servers: Servers, database: str) -> dict[str, Any]:
    base = servers.api.base_url
    return {
        "upstream": {
            "base_url": servers.upstream.base_url,
            "api_key": UPSTREAM_KEY,
            "model": "m1",
        },
        "database": database,
        "egress": {"allow": ["127.0.0.1"]},
        "metrics_token": SCRAPER,
        "agents": [{"id": "support", "system_prompt": "Be brief."}],
        "actions": [
            {
                "name": "Look up order",
                "url": f"{base}/echo/orders/{{{{args.order_number}}}}",
                "parameters": {"order_number": {"required": True}},
            },
            {"name": "Broken", "url": f"{base}/status/500", "retries": 0},
            {"name": "Customer", "url": f"{base}/echo/customers?email={{{{lead.email}}}}"},
        ],
    }


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    loop = LoopThread()
    try:
        upstream = loop.enter(running_upstream(api_key=UPSTREAM_KEY))
        api = loop.enter(running_api())
        yield Servers(loop, upstream, api)
    finally:
        loop.close()


def start(
    servers: Servers, directory: Path, args: tuple[str, ...] = (), **environ: str
) -> GatewayProcess:
    env = {"ACTIONGATE_ADMIN_TOKEN": ADMIN, **environ}
    database = f"sqlite:///{directory / 'gateway.db'}"
    return start_gateway(directory, config(servers, database), env, args=args)


def scrape(
    gateway: GatewayProcess, token: str = ADMIN
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(
        f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict[Any, float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def call(name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments or {}}]}


def drive(servers: Servers, gateway: GatewayProcess) -> None:
    """A success, an http_error, a rejected call, then a streamed request."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=20)
    ask = [{"role": "user", "content": "Where is order A-12345?"}]
    servers.script(
        [
            call("look_up_order", {"order_number": "A-12345"}),
            {"content": "Shipped."},
            call("broken"),
            {"content": "Sorry."},
            call("customer"),  # no lead.email: rejected, nothing sent
            {"content": "What is your email?"},
            {"content": "Streamed answer."},
        ]
    )
    for _ in range(3):
        client.chat.completions.create(model="support", messages=ask)  # type: ignore[arg-type]
    with client.chat.completions.create(model="support", messages=ask, stream=True) as stream:  # type: ignore[arg-type]
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_metrics_after_real_traffic(servers: Servers, tmp_path: Path) -> None:
    gateway = start(servers, tmp_path)
    try:
        before = scrape(gateway)
        drive(servers, gateway)
        after = scrape(gateway, SCRAPER)  # the scraper's own token works too
        denied = httpx.get(f"{gateway.url}/metrics", timeout=10)
        wrong = httpx.get(
            f"{gateway.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10
        )
    finally:
        assert gateway.stop() == 0, gateway.logs_text()
    assert denied.status_code == 401 and wrong.status_code == 401
    assert "metrics_token" in denied.json()["error"]["message"]

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("actiongate_requests_total", front="chat", agent="support", status="200") == 4
    assert grew("actiongate_request_duration_seconds_count", front="chat") == 4
    assert grew("actiongate_gateway_added_seconds_count", front="chat") == 4
    calls = "actiongate_action_calls_total"
    assert grew(calls, action="look_up_order", agent="support", outcome="success") == 1
    assert grew(calls, action="broken", agent="support", outcome="http_error") == 1
    assert grew(calls, action="customer", agent="support", outcome="rejected") == 1
    assert grew("actiongate_action_duration_seconds_count", action="broken") == 1
    upstream = grew("actiongate_upstream_requests_total", agent="support", model="m1", status="200")
    assert upstream == 7  # two rounds for each of the three tool turns, one for the stream
    assert grew("actiongate_upstream_duration_seconds_count", agent="support", model="m1") == 7
    prompt = grew("actiongate_tokens_total", agent="support", model="m1", kind="prompt")
    assert (
        prompt > 0
        and grew("actiongate_tokens_total", agent="support", model="m1", kind="completion") > 0
    )
    assert value(after, "actiongate_log_buffer_records") >= 0
    assert ("actiongate_log_records_dropped_total", ()) in after
    # The added time is a part of the whole: never more than the requests took.
    added = grew("actiongate_gateway_added_seconds_sum", front="chat")
    total = grew("actiongate_request_duration_seconds_sum", front="chat")
    assert 0 < added < total


def test_two_processes_share_one_set_of_series(servers: Servers, tmp_path: Path) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    first = start(servers, tmp_path / "one", **env)
    second = start(servers, tmp_path / "two", **env)
    try:
        for gateway in (first, second, second):
            servers.script([{"content": "Hi."}])
            httpx.post(
                f"{gateway.base_url}/chat/completions",
                json={"model": "support", "messages": [{"role": "user", "content": "Hi"}]},
                timeout=10,
            ).raise_for_status()
        seen_by_first, seen_by_second = scrape(first), scrape(second)
    finally:
        assert first.stop() == 0 and second.stop() == 0
    for seen in (seen_by_first, seen_by_second):
        assert (
            value(seen, "actiongate_requests_total", front="chat", agent="support", status="200")
            == 3
        )


def test_json_logs_carry_the_request_id(servers: Servers, tmp_path: Path) -> None:
    gateway = start(servers, tmp_path, ("--log-format", "json", "--log-level", "info"))
    try:
        servers.script([call("look_up_order", {"order_number": "A-1"}), {"content": "Ok."}])
        response = httpx.post(
            f"{gateway.base_url}/chat/completions",
            json={"model": "support", "messages": [{"role": "user", "content": "Order A-1?"}]},
            headers={"x-request-id": "client-req-42"},
            timeout=10,
        )
        generated = httpx.get(f"{gateway.url}/healthz", headers={"x-request-id": "bad id!"})
    finally:
        assert gateway.stop() == 0
    assert response.headers["x-request-id"] == "client-req-42"
    assert generated.headers["x-request-id"] != "bad id!" and generated.headers["x-request-id"]
    lines = [json.loads(line) for line in gateway.logs_text().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "client-req-42"]
    action = next(line for line in mine if line["logger"] == "actiongate.actions")
    assert action["action"] == "look_up_order" and action["outcome"] == "success"
    assert action["agent"] == "support" and action["ms"] > 0 and action["conversation_id"]
    access = next(line for line in mine if line["logger"] == "actiongate.access")
    assert access["status"] == 200 and access["front"] == "chat" and access["level"] == "info"
    assert access["conversation_id"] == action["conversation_id"] and "time" in access


def test_the_grafana_dashboard_uses_only_series_the_gateway_exposes() -> None:
    import re

    from gateway.telemetry import metrics

    exposed: set[str] = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        if not family.name.startswith("actiongate_"):
            continue
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exposed.update(family.name + s for s in suffixes.get(family.type, [""]))
    dashboard = json.loads(
        (Path(__file__).parents[1] / "docs" / "grafana-dashboard.json").read_text()
    )
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"actiongate_[a-z_]+", target["expr"])
    }
    assert used and used <= exposed, used - exposed
    assert {"actiongate_action_health", "actiongate_circuit_open"} <= used


def test_a_metrics_port_serves_the_series_without_a_token(servers: Servers, tmp_path: Path) -> None:
    port = free_port()
    gateway = start(servers, tmp_path, ("--metrics-port", str(port)))
    try:
        servers.script([{"content": "Hi."}])
        httpx.post(
            f"{gateway.base_url}/chat/completions",
            json={"model": "support", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=10,
        ).raise_for_status()
        open_port = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        main_port = httpx.get(f"{gateway.url}/metrics", timeout=10)
    finally:
        assert gateway.stop() == 0
    assert open_port.status_code == 200
    assert (
        'actiongate_requests_total{agent="support",front="chat",status="200"} 1.0' in open_port.text
    )
    assert main_port.status_code == 401  # the gateway's own port still wants a token


async def test_health_checks_set_the_action_health_gauge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.gateway import running_gateway

    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", ADMIN)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with running_gateway(tmp_path) as gw:
        for name, path in (("Ping ok", "echo/ping"), ("Ping broken", "status/500")):
            action = {
                "name": name,
                "url": f"{gw.api.base_url}/{path}",
                "retries": 0,
                "health_check": {"every": 60},
            }
            saved = await gw.client.post("/api/actions", json=action, headers=auth)
            assert saved.status_code == 201, saved.text
        for tool in ("ping_ok", "ping_broken"):
            ran = await gw.client.post(f"/api/actions/{tool}/health/run", headers=auth)
            assert ran.status_code == 200, ran.text
        scraped = await gw.client.get("/metrics", headers=auth)
    exposed = scraped.text
    assert 'actiongate_action_health{action="ping_ok"} 1.0' in exposed
    assert 'actiongate_action_health{action="ping_broken"} 0.0' in exposed


def test_two_workers_on_one_port_share_one_set_of_series(servers: Servers, tmp_path: Path) -> None:
    import concurrent.futures

    shared = tmp_path / "prometheus"
    args = ("--workers", "2", "--log-format", "json", "--log-level", "info")
    gateway = start(servers, tmp_path, args, PROMETHEUS_MULTIPROC_DIR=str(shared))
    sent = 0

    def ask(_: int) -> int:
        return httpx.post(
            f"{gateway.base_url}/chat/completions",
            json={"model": "support", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=20,
        ).status_code

    def pids() -> set[int]:
        lines = [json.loads(x) for x in gateway.logs_text().splitlines() if x.startswith("{")]
        return {line["pid"] for line in lines if line.get("logger") == "actiongate.access"}

    try:
        for _ in range(5):  # the kernel picks the worker: send until both have answered
            servers.script([{"content": "Hi.", "delay_s": 0.05}] * 20)
            with concurrent.futures.ThreadPoolExecutor(10) as pool:
                assert set(pool.map(ask, range(20))) == {200}
            sent += 20
            if len(pids()) == 2:
                break
        seen = scrape(gateway)
    finally:
        assert gateway.stop() == 0, gateway.logs_text()
    assert len(pids()) == 2, "one worker answered every request"
    total = value(seen, "actiongate_requests_total", front="chat", agent="support", status="200")
    assert total == sent  # one scrape, answered by one worker, counts both workers' requests
    assert "(2 workers)" in gateway.logs_text()


def test_sigterm_drains_every_worker(servers: Servers, tmp_path: Path) -> None:
    import concurrent.futures

    gateway = start(servers, tmp_path, ("--workers", "2"))
    servers.script([{"content": "Slow but whole.", "delay_s": 1.0}] * 4)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = [
            pool.submit(
                httpx.post,
                f"{gateway.base_url}/chat/completions",
                json={"model": "support", "messages": [{"role": "user", "content": "Hi"}]},
                timeout=20,
            )
            for _ in range(4)
        ]
        time.sleep(0.4)  # all four are in flight
        status = gateway.stop()
        results = [a.result() for a in answers]
    assert status == 0, gateway.logs_text()
    assert [r.status_code for r in results] == [200] * 4
    assert all(r.json()["choices"][0]["message"]["content"] == "Slow but whole." for r in results)
