"""Issue 12, definition items: JSON text bodies (12), RE2 form patterns (15), short secrets in the
config (17), missing secrets (25) and YAML duplicate keys, lines and warnings (30)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli.main import main
from gateway.definitions.actions import FormAction, HttpAction
from gateway.definitions.config import load_config, parse_action, parse_config
from gateway.engine.context import Conversation
from gateway.engine.executor import Executor
from gateway.errors import ConfigError, DefinitionError, RequestError
from gateway.net.egress import EgressPolicy
from gateway.net.outbound import Outbound
from gateway.proxy.interactive import validate_form
from tests.support.action_api import ActionAPI, body_json, running_api
from tests.support.gateway import Gateway, running_gateway

TOKEN = "admin-SECRET-token-42"


@pytest.fixture
async def api() -> AsyncIterator[ActionAPI]:
    async with running_api() as state:
        yield state


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    outbound = Outbound(EgressPolicy(["127.0.0.1"]))
    yield Executor(outbound, secrets={"TOKEN": "tok-SECRET-1234"})
    await outbound.close()


def http(**fields: Any) -> HttpAction:
    action = parse_action({"name": "Thing", **fields})
    assert isinstance(action, HttpAction)
    return action


def conversation(**lead: Any) -> Conversation:
    return Conversation(id="c1", agent_id="support", lead=lead, message="hello")


def refused(*actions: dict[str, Any], **config: Any) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        parse_config({**config, "actions": list(actions)}, environ={})
    return info.value


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- item 12: a text body sent as JSON must be JSON --------------------------------------------

JSON_HEADERS = {"Content-Type": "application/json"}


def test_a_json_text_body_missing_a_brace_is_refused_at_save() -> None:
    err = refused(
        {
            "name": "Thing",
            "method": "POST",
            "url": "https://api.example.com/tickets",
            "headers": JSON_HEADERS,
            "body": '{"subject": "{{args.subject}}", "count": {{args.count}}',
            "parameters": {"subject": {}, "count": {"type": "integer"}},
        }
    )
    assert str(err) == (
        "action 'Thing': body: not valid JSON around its variables (Expecting ',' delimiter at "
        "line 1) but sent as application/json; fix the JSON or write the body as a YAML/JSON "
        "object"
    )


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "application/vnd.x+json"])
def test_every_json_content_type_is_checked(ctype: str) -> None:
    err = refused(
        {
            "name": "Thing",
            "method": "POST",
            "url": "https://api.example.com/t",
            "headers": {"content-type": ctype},
            "body": '{"a": 1',
        }
    )
    assert err.field == "body"


def test_valid_json_text_bodies_and_non_json_bodies_are_accepted() -> None:
    base = {"method": "POST", "url": "https://api.example.com/t", "headers": JSON_HEADERS}
    parse_config(
        {
            "actions": [
                {
                    **base,
                    "name": "A",
                    "body": '{"s": "{{args.s}}", "n": {{args.n}}}',
                    "parameters": {"s": {}, "n": {"type": "integer"}},
                },
                {**base, "name": "B", "body": "{{args.s}}", "parameters": {"s": {}}},
                {**base, "name": "C", "headers": {"Content-Type": "text/plain"}, "body": "{oops"},
            ]
        },
        environ={},
    )


async def test_a_body_that_renders_to_invalid_json_is_not_sent(
    api: ActionAPI, executor: Executor
) -> None:
    act = http(
        method="POST",
        url=f"{api.base_url}/echo/tickets",
        headers=JSON_HEADERS,
        body='{"count": {{args.count}}}',
        parameters={"count": {"type": "string"}},
        confirm=False,
    )
    bad = await executor.execute_action(act, conversation(), {"count": 'two, "x": 1'})
    assert bad.outcome == "rejected"
    assert bad.content == (
        "Action thing was not run: the request body is not valid JSON once its values are filled "
        "in, so it was not sent as application/json; a value may be of the wrong type for where "
        "the action places it."
    )
    assert api.received == []
    good = await executor.execute_action(act, conversation(), {"count": "2"})
    assert good.outcome == "success"
    assert body_json(api.last()) == {"count": 2}


# --- item 15: form patterns run on RE2 --------------------------------------------------------


def form(pattern: str) -> dict[str, Any]:
    return {"name": "Thing", "type": "form", "fields": [{"name": "code", "pattern": pattern}]}


def test_a_pathological_pattern_cannot_hang_a_worker() -> None:
    action = parse_action(form("(a+)+$"))
    assert isinstance(action, FormAction)
    hostile = "a" * 9_999 + "!"  # exponential for a backtracking engine
    started = time.perf_counter()
    with pytest.raises(RequestError) as info:
        validate_form(action, {"code": hostile})
    assert time.perf_counter() - started < 2.0
    assert info.value.status == 422
    assert str(info.value) == "form 'thing': field 'code': does not have the expected format"
    assert validate_form(action, {"code": "a" * 10_000}) == {"code": "a" * 10_000}


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", r"invalid escape sequence: \1"),
        (r"(?=a)a", "invalid perl operator: (?="),
        (r"(?<!x)y", "invalid perl operator: (?<!"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_at_save(pattern: str, why: str) -> None:
    err = refused(form(pattern))
    assert err.field == "fields[0].pattern"
    assert err.reason == (
        f"invalid regular expression: not supported by the linear-time regex engine (RE2): {why} "
        "(backreferences and lookaround are not available)"
    )


def test_a_stored_pattern_re2_cannot_run_refuses_the_field() -> None:
    # Stored before patterns were checked with RE2: refused, never matched some other way.
    action = FormAction.model_validate(form(r"(a)\1"))
    with pytest.raises(RequestError) as info:
        validate_form(action, {"code": "aa"})
    assert info.value.status == 422
    assert str(info.value) == "form 'thing': field 'code': the form's pattern cannot be checked"


# --- item 17: secrets too short to redact ----------------------------------------------------


@pytest.mark.parametrize(("value", "what"), [("zq9", "shorter than 4 characters"), ("", "empty")])
def test_a_short_secret_is_refused_naming_it_never_its_value(value: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"secrets": {"TICKET_TOKEN": value}}, environ={})
    assert str(info.value) == (
        f"secrets: TICKET_TOKEN: the value is {what}; a secret that short cannot be redacted "
        "from logs (use the real credential)"
    )
    assert value == "" or value not in str(info.value)


def test_a_short_secret_from_the_environment_is_refused_and_an_unset_one_is_listed() -> None:
    with pytest.raises(ConfigError, match="secrets: KEY: the value is shorter than 4"):
        parse_config({"secrets": {"KEY": "${KEY}"}}, environ={"KEY": "k9"})
    config = parse_config({"secrets": {"KEY": "${KEY}"}}, environ={})
    assert config.unset_env == ["KEY"]  # validate warns, serve refuses (as before)
    assert parse_config({"secrets": {"KEY": "k9x4"}}, environ={}).secrets == {"KEY": "k9x4"}


def test_a_short_secret_in_a_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("secrets:\n  CRM: crm-key-long\n  TICKET_TOKEN: zq9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: line 3: secrets: TICKET_TOKEN: the value is ")
    assert "zq9" not in str(info.value)


# --- item 25: a missing secret is an error, never a question for the customer -------------------

TYPO = {
    "name": "Create ticket",
    "url": "https://api.example.com/tickets",
    "headers": {"Authorization": "Bearer {{secrets.TICKET_TOKN}}"},
    "when_not_to_use": "Not for refunds.",
}


def test_validate_refuses_a_missing_secret_naming_action_secret_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "secrets:\n"
        "  TICKET_TOKEN: tkt-SECRET-123\n"
        "actions:\n"
        "  - name: Create ticket\n"
        "    url: https://api.example.com/tickets\n"
        "    headers:\n"
        '      Authorization: "Bearer {{secrets.TICKET_TOKN}}"\n'
        "    when_not_to_use: Not for refunds.\n"
    )
    code, out, err = run_cli(capsys, "validate", str(path))
    assert (code, out) == (1, "")
    assert err == (
        f"error: {path}: line 7: action 'Create ticket': headers.Authorization: secret "
        "'TICKET_TOKN' is not defined: add it to the config's secrets: (or store it with PUT "
        "/api/secrets/TICKET_TOKN)\n"
    )


def test_serve_does_not_start_with_a_missing_secret(tmp_path: Path) -> None:
    exe = shutil.which("actiongate", path=str(Path(sys.executable).parent))
    assert exe is not None
    path = tmp_path / "gw.yaml"
    path.write_text(
        yaml.safe_dump({"database": f"sqlite:///{tmp_path / 'gw.db'}", "actions": [TYPO]})
    )
    env = {**os.environ, "ACTIONGATE_ADMIN_TOKEN": TOKEN}
    proc = subprocess.run(
        [exe, "serve", "--config", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert (
        "action 'Create ticket': headers.Authorization: secret 'TICKET_TOKN' is not defined: add "
        "it to the config's secrets: (or store it with PUT /api/secrets/TICKET_TOKN)"
    ) in proc.stderr
    assert proc.stderr.endswith("error: the gateway did not start (the reason is logged above)\n")


@pytest.fixture
async def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_gateway(tmp_path) as gateway:
        yield gateway


async def test_admin_saves_count_the_store_and_refuse_a_missing_secret(gw: Gateway) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    r = await gw.client.post("/api/actions", json=TYPO, headers=headers)
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "headers.Authorization"
    assert "secret 'TICKET_TOKN' is not defined" in r.json()["error"]["message"]

    r = await gw.client.put(
        "/api/secrets/TICKET_TOKN", json={"value": "tkt-SECRET-123"}, headers=headers
    )
    assert r.status_code in {200, 204}
    r = await gw.client.post("/api/actions", json=TYPO, headers=headers)
    assert r.status_code == 201  # defined in the store: accepted
    r = await gw.client.delete("/api/secrets/TICKET_TOKN", headers=headers)
    assert r.status_code == 409
    assert r.json()["error"]["message"] == (
        "secret 'TICKET_TOKN' is used by action 'create_ticket'; remove it from the action first"
    )


async def test_a_secret_missing_at_call_time_is_a_misconfiguration(
    api: ActionAPI, executor: Executor
) -> None:
    act = http(url=f"{api.base_url}/echo/x", headers={"X-Key": "{{secrets.MISSING}}"})
    result = await executor.execute_action(act, conversation(), "{}")
    assert result.outcome == "rejected"
    assert result.content == (
        "Action thing was not run: this action is misconfigured: its secret 'MISSING' is not set "
        "in the gateway. This is not something the customer can provide; do not ask them for it, "
        "tell them the action is unavailable right now."
    )
    assert "ask the customer" not in result.content
    assert api.received == []
    # Both missing: the secret is named, not the value the customer could give.
    both = http(
        url=f"{api.base_url}/echo/{{{{lead.email}}}}", headers={"X-Key": "{{secrets.MISSING}}"}
    )
    assert "misconfigured" in (await executor.execute_action(both, conversation(), "{}")).content
    # A conversation value is still something to ask for.
    lead = http(url=f"{api.base_url}/echo/{{{{lead.email}}}}")
    content = (await executor.execute_action(lead, conversation(), "{}")).content
    assert "ask the customer for it" in content


def test_a_navigate_link_may_not_carry_a_secret() -> None:
    err = refused(
        {
            "name": "Thing",
            "type": "button",
            "label": "Open",
            "on_click": {"navigate": "https://example.com/?k={{secrets.TOKEN}}"},
        },
        secrets={"TOKEN": "tok-SECRET-1234"},
    )
    assert (
        str(err)
        == "action 'Thing': on_click.navigate: a link the customer opens may not use secrets"
    )


# --- item 30: duplicate keys, lines, when_not_to_use ---------------------------------------------


def test_a_duplicate_yaml_key_is_refused_with_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "actions:\n"
        "  - name: Thing\n"
        "    url: https://api.example.com/a\n"
        "    when_not_to_use: Never.\n"
        "    url: http://169.254.169.254/\n"
    )
    code, out, err = run_cli(capsys, "validate", str(path))
    assert (code, out) == (1, "")
    assert err == f"error: {path}: line 5: duplicate key 'url' (first at line 3)\n"


def test_a_duplicate_json_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.json"
    path.write_text(
        json.dumps({"name": "Thing", "url": "https://a.example/"})[:-1] + ', "url": "x"}'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: duplicate key 'url'"


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "actions:\n"
        "  - &base\n"
        "    name: A\n"
        "    url: https://api.example.com/a\n"
        "    timeout_s: 5\n"
        "  - <<: *base\n"
        "    name: B\n"
        "    url: https://api.example.com/b\n"
    )
    _, b = load_config(path).actions
    assert isinstance(b, HttpAction)
    assert (b.name, b.url, b.timeout_s) == ("B", "https://api.example.com/b", 5)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "actions:\n  - name: Thing\n    url: https://api.example.com/a\n    timeout_s: 99\n",
            4,
            "action 'Thing': timeout_s: Input should be less than or equal to 45",
        ),
        (
            "actions:\n  - name: Thing\n    url: https://a.example/\n"
            "    fields:\n      - name: x\n",
            4,
            "action 'Thing': fields: Extra inputs are not permitted",
        ),
        (
            "upstream:\n  model: m\negress:\n  allow: []\n  ports: [80, 0]\n",
            5,
            "config: egress.ports.1: Input should be greater than or equal to 1",
        ),
        (
            "actions:\n  - name: Thing\n    url: https://api.example.com/a\n"
            "agents:\n  - id: support\n    actions: [thing, nope]\n",
            6,
            "agent 'support': actions: unknown action 'nope'",
        ),
    ],
)
def test_field_errors_name_the_yaml_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: line {line}: {message}"


def test_validate_warns_about_an_action_without_when_not_to_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "actions:\n"
        "  - name: Thing\n"
        "    url: https://api.example.com/a\n"
        "  - name: Other\n"
        "    url: https://api.example.com/b\n"
        "    when_not_to_use: Not for refunds.\n"
    )
    code, out, err = run_cli(capsys, "validate", str(path))
    assert (code, out) == (0, "OK: 2 actions, 0 agents\n")
    assert err == "warning: action 'Thing' has no when_not_to_use (when not to call it)\n"
