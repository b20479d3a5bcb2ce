"""Cassettes: conversations recorded through the real gateway, then replayed against it.

Recording runs the demo config with the scripted model and the sample customer API on loopback
sockets; a replay runs the gateway in process with both answered from the cassette, and must
report every difference a changed action causes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from examples.customer_api import CREDENTIALS
from examples.record_cassettes import JANE, chat, record_examples, recording_gateway
from gateway.definitions.config import Config, parse_config
from gateway.replay.cassette import CassetteError, dump_line, load_cassette, parse_cassette
from gateway.replay.differences import Normaliser
from gateway.replay.run import ReplayReport, main, replay, replay_file

SECRETS = [*CREDENTIALS.values(), "demo-upstream-key", "demo-token-"]
NAMES = ["example-account-streamed", "example-order-status"]
NAMES += ["example-refund-confirmed", "example-return-form"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example conversations, freshly recorded (module-wide: recording takes a second)."""
    out = tmp_path_factory.mktemp("cassettes")
    asyncio.run(record_examples(out, demo_ports=False))
    return out


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def changed(cassette: Path, change: Callable[[dict[str, Any]], None]) -> Config:
    """The cassette's recorded config with one edit, as a user's new config would be."""
    data = load_cassette(cassette).config
    assert data is not None
    change(data)
    return parse_config(data, environ={})


def action(data: dict[str, Any], tool: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in data["actions"] if a["tool_name"] == tool)
    return found


def found(report: ReplayReport, where: str, what: str) -> list[tuple[Any, Any]]:
    return [
        (d.recorded, d.replayed)
        for d in report.differences
        if d.where.startswith(where) and d.what.startswith(what)
    ]


# --- recording ------------------------------------------------------------------------------


def test_one_cassette_per_conversation_with_sorted_keys_and_no_secret(recorded: Path) -> None:
    assert sorted(p.stem for p in recorded.glob("*.jsonl")) == NAMES
    for path in recorded.glob("*.jsonl"):
        text = path.read_text()
        assert not [s for s in SECRETS if s in text], path
        header, config, *rest = lines(path)
        assert header["kind"] == "header" and header["actiongate_cassette"] == 1
        assert header["conversation_id"] == path.stem
        assert set(config["config"]["secrets"].values()) == {"[REDACTED]"}
        assert "database" not in config["config"]
        assert config["config"]["upstream"]["api_key"] == "[REDACTED]"
        for raw, line in zip(text.splitlines()[2:], rest, strict=True):
            assert raw == dump_line(line)  # sorted keys, one line each: diffs stay readable
        kinds = [line["kind"] for line in rest]
        assert kinds[0] == "request" and kinds[-2:] == ["response", "executions"]


def test_streamed_chunks_are_kept_as_sent(recorded: Path) -> None:
    rest = lines(recorded / "example-account-streamed.jsonl")[2:]
    upstream = [line for line in rest if line["kind"] == "upstream"]
    assert [u["stream"] for u in upstream] == [True, True]
    chunks = upstream[1]["chunks"]
    assert len(chunks) > 3 and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("Here is what I found")
    [response] = [line for line in rest if line["kind"] == "response"]
    assert response["events"][-1] == "[DONE]"
    assert response["events"][-2]["actiongate"]["executions"][0]["action"] == "get_customer_account"


def test_action_exchanges_name_their_tool_and_oauth_tokens_are_redacted(recorded: Path) -> None:
    rest = lines(recorded / "example-refund-confirmed.jsonl")[2:]
    token, refund = [line for line in rest if line["kind"] == "action"]
    assert token["action"] is None and "grant_type=client_credentials" in token["sent"]["body"]
    assert json.loads(token["received"]["body"])["access_token"] == "[REDACTED]"
    assert refund["action"] == "submit_refund" and refund["request"] == 1
    asked = next(line for line in rest if line["kind"] == "upstream")
    call = asked["received"]["choices"][0]["message"]["tool_calls"][0]
    assert refund["tool_call_id"] == call["id"]
    assert refund["sent"]["headers"]["Authorization"] == "[REDACTED]"
    assert json.loads(refund["sent"]["body"])["reason"] == "damaged"
    executions = [line["records"] for line in rest if line["kind"] == "executions"]
    assert [[r["outcome"] for r in rows] for rows in executions] == [
        ["pending_confirmation"],
        ["pending_confirmation", "success"],
    ]


# --- replay ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
async def test_replay_passes_and_stored_rows_match_the_cassette(recorded: Path, name: str) -> None:
    path = recorded / f"{name}.jsonl"
    report = await replay(path)
    assert report.passed, report.as_text()
    assert report.as_text().startswith(f"replay {path}: OK")
    expected = [(r["action"], r["outcome"], r["injected"]) for r in load_cassette(path).executions]
    assert [(r.action, r.outcome, r.injected) for r in report.records] == expected
    assert expected and all(r.conversation_id == name for r in report.records)


async def test_changed_url_template_fails_with_a_clear_report(recorded: Path) -> None:
    path = recorded / "example-order-status.jsonl"

    def v2(data: dict[str, Any]) -> None:
        order = action(data, "look_up_order")
        order["url"] = order["url"].replace("/orders/", "/v2/orders/")

    report = await replay(path, changed(path, v2))
    assert not report.passed
    [(before, after)] = found(report, "action look_up_order (GET", "url")
    assert before.endswith("/orders/A-10023") and after.endswith("/v2/orders/A-10023")
    [(before, after)] = found(report, "log row look_up_order", "request.url")
    assert after.endswith("/v2/orders/A-10023")
    text = report.as_text()
    assert "FAILED, 2 differences" in text and "request 0, action look_up_order" in text
    # The upstream still got the recorded response, so nothing else differs.
    assert not found(report, "upstream", "") and not found(report, "response", "")


async def test_changed_body_fails(recorded: Path) -> None:
    path = recorded / "example-refund-confirmed.jsonl"

    def rename(data: dict[str, Any]) -> None:
        body = action(data, "submit_refund")["body"]
        body["refund_reason"] = body.pop("reason")

    report = await replay(path, changed(path, rename))
    differences = {(d.request, d.where.split(" (")[0], d.what) for d in report.differences}
    assert (1, "action submit_refund", "body.reason") in differences
    assert (1, "action submit_refund", "body.refund_reason") in differences
    assert found(report, "action submit_refund", "body.reason") == [("damaged", "(absent)")]
    assert found(report, "log row submit_refund", "request.body.refund_reason")


@pytest.mark.parametrize(
    ("name", "tool", "trim", "lost"),
    [
        ("example-order-status", "look_up_order", {"select": "{status: status}"}, "delivery_date"),
        ("example-account-streamed", "get_customer_account", {"max_chars": 100}, "A-10024"),
    ],
    ids=["select", "max_chars"],
)
async def test_changed_trimming_fails_on_what_the_model_was_given(
    recorded: Path, name: str, tool: str, trim: dict[str, Any], lost: str
) -> None:
    path = recorded / f"{name}.jsonl"
    report = await replay(path, changed(path, lambda d: action(d, tool)["response"].update(trim)))
    [difference] = [d for d in report.differences if d.where == "upstream call 1"]
    assert difference.what.startswith("messages[3].content (tool result given to the model for")
    assert difference.what.endswith(f"{tool})")
    assert lost in difference.recorded and lost not in difference.replayed
    assert found(report, f"log row {tool}", "injected_content")
    assert not found(report, "action", "")  # the request itself did not change


async def test_unexpected_request_gets_a_connection_error(tmp_path: Path) -> None:
    async with recording_gateway(tmp_path, demo_ports=False) as session:
        user = {"role": "user", "content": "Which plan am I on? I am jane@example.com"}
        await chat(session.client, {"id": "no-lead"}, [user])  # lead.email missing: refused
    path = tmp_path / "no-lead.jsonl"
    assert [r["outcome"] for r in load_cassette(path).executions] == ["rejected"]

    def literal(data: dict[str, Any]) -> None:
        account = action(data, "get_customer_account")
        account["url"] = account["url"].replace("{{lead.email}}", "jane@example.com")

    report = await replay(path, changed(path, literal))
    [(before, after)] = found(report, "action request GET", "unexpected request")
    assert before == "(absent)" and after["url"].endswith("customers?email=jane@example.com")
    assert found(report, "log row get_customer_account", "outcome") == [
        ("rejected", "connect_error")
    ]


async def test_request_not_made_is_reported(recorded: Path) -> None:
    path = recorded / "example-order-status.jsonl"

    def disable(data: dict[str, Any]) -> None:
        action(data, "look_up_order")["enabled"] = False

    report = await replay(path, changed(path, disable))
    [(before, after)] = found(report, "action look_up_order", "recorded request not made")
    assert before["url"].endswith("/orders/A-10023") and after == "(absent)"
    assert found(report, "log row look_up_order", "outcome") == [("success", "rejected")]
    assert found(report, "upstream call 0", "tools[")  # the model was offered one tool less


async def test_upstream_failure_and_conversation_without_id_replay(tmp_path: Path) -> None:
    async with recording_gateway(tmp_path, demo_ports=False) as session:
        user = {"role": "user", "content": "Where is my order A-10023?"}
        body: dict[str, Any] = {"model": "support", "messages": [user]}
        first = (await session.client.post("/v1/chat/completions", json=body)).json()
        conversation_id = first["actiongate"]["conversation_id"]
        assert conversation_id.startswith("conv_")
        session.upstream.script([{"error": {"status": 500, "message": "overloaded"}}])
        body["conversation"] = {"id": conversation_id}
        failed = await session.client.post("/v1/chat/completions", json=body)
        assert failed.status_code == 502
    path = tmp_path / f"{conversation_id}.jsonl"
    cassette = load_cassette(path)
    assert "conversation" not in cassette.requests[0].request["body"]
    [broken] = cassette.requests[1].upstream
    assert broken["error"]["status"] == 502 and "overloaded" in broken["error"]["message"]
    report = await replay(path)
    assert report.passed, report.as_text()
    assert report.requests == 2 and report.upstream_calls == 3


async def test_parallel_calls_are_matched_by_request(tmp_path: Path) -> None:
    async with recording_gateway(tmp_path, demo_ports=False) as session:
        calls = [
            {"name": "look_up_order", "arguments": {"order_number": n}}
            for n in ("A-10024", "A-10023", "A-99999")
        ]
        session.upstream.script([{"tool_calls": calls}, {"content": "Two found."}])
        user = {"role": "user", "content": "Where are my orders?"}
        await chat(session.client, {"id": "parallel", "lead": JANE}, [user])
    path = tmp_path / "parallel.jsonl"
    outcomes = sorted(r["outcome"] for r in load_cassette(path).executions)
    assert outcomes == ["http_error", "success", "success"]
    report = await replay(path)
    assert report.passed, report.as_text()
    assert report.action_requests == 3


async def test_blocking_replay_works_inside_an_event_loop(recorded: Path) -> None:
    report = replay_file(recorded / "example-return-form.jsonl")  # runs on a thread of its own
    assert report.passed, report.as_text()
    assert [(r.action, r.outcome) for r in report.records] == [("return_request", "success")]


async def test_replay_is_deterministic(recorded: Path) -> None:
    path = recorded / "example-refund-confirmed.jsonl"

    def cheaper(data: dict[str, Any]) -> None:
        action(data, "submit_refund")["body"]["amount"] = "1"

    config = changed(path, cheaper)
    first, second = await replay(path, config), await replay(path, config)
    assert not first.passed
    assert first.as_text() == second.as_text()
    assert first.as_json()["differences"] == second.as_json()["differences"]


def test_cli_exit_status_and_report(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(recorded)]) == 0
    out = capsys.readouterr().out
    assert out.count(": OK (") == 4

    path = recorded / "example-order-status.jsonl"
    data = load_cassette(path).config
    assert data is not None
    action(data, "look_up_order")["url"] = "http://127.0.0.1:8092/v2/orders/{{args.order_number}}"
    config = tmp_path / "changed.json"
    config.write_text(json.dumps(data))
    assert main([str(path), "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "recorded: http" in out and "/v2/orders/A-10023" in out

    assert main([str(path), "--config", str(config), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False and report["differences"][0]["what"] == "url"

    assert main([str(tmp_path / "missing.jsonl")]) == 1
    assert capsys.readouterr().err.startswith("error: cannot read cassette")


# --- format and normalisation ---------------------------------------------------------------


def test_cassette_format_is_checked() -> None:
    with pytest.raises(CassetteError, match="no header"):
        parse_cassette('{"kind": "request", "request": 0}')
    with pytest.raises(CassetteError, match="format 2 is not supported"):
        parse_cassette('{"kind": "header", "actiongate_cassette": 2}')
    with pytest.raises(CassetteError, match=":2: not JSON"):
        parse_cassette('{"kind": "header", "actiongate_cassette": 1}\n{oops')


def test_normaliser_numbers_ids_by_first_appearance() -> None:
    a, b = Normaliser(), Normaliser()
    one = {
        "id": "chatcmpl-aaaaaaaaaaaa",
        "created": 1,
        "calls": ["call_111111111111111111111111", "call_222222222222222222222222"],
        "answer": "call_111111111111111111111111",
        "headers": {"Idempotency-Key": "x"},
        "at": "2026-01-02T03:04:05.123Z",
        "conversation": "conv_" + "a" * 32,
    }
    two = {
        **one,
        "id": "chatcmpl-bbbbbbbbbbbb",
        "created": 2,
        "calls": ["call_333333333333333333333333", "call_444444444444444444444444"],
        "answer": "call_333333333333333333333333",
        "headers": {"Idempotency-Key": "y"},
        "at": "2027-01-02T03:04:05Z",
        "conversation": "conv_" + "b" * 32,
    }
    assert a.value(one) == b.value(two)
    assert a.value(one)["calls"] == ["<call#1>", "<call#2>"] and "created" not in a.value(one)
    assert Normaliser().value({"answer": "call_444444444444444444444444"}) != b.value(
        {"answer": "call_444444444444444444444444"}
    )  # a result answering the other call still differs
