"""Action definitions: the seed example, file shapes, defaults and every save-time rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.definitions.actions import HttpAction, default_tool_name
from gateway.definitions.config import load_config, parse_config
from gateway.errors import ConfigError, DefinitionError

SEED: dict[str, Any] = {
    "name": "Get Customer Account",
    "type": "http",
    "method": "GET",
    "url": "https://api.yourcompany.com/customers?email={{lead.email}}",
    "headers": {"Authorization": "Bearer YOUR_API_KEY", "Content-Type": "application/json"},
    "when_not_to_use": (
        "Do not use this action if the customer has not provided their email address "
        "or if they are asking a general question."
    ),
}


def http(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "Thing", "type": "http", "url": "https://api.example.com/x"}
    base.update(overrides)
    return base


def refused(item: dict[str, Any] | list[dict[str, Any]]) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        parse_config({"actions": item if isinstance(item, list) else [item]}, environ={})
    return info.value


# --- the seed and file shapes ---------------------------------------------------------------


def test_seed_example_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED))
    [action] = load_config(path).actions
    assert isinstance(action, HttpAction)
    assert action.tool_name == "get_customer_account"
    assert action.method == "GET"
    assert action.url == SEED["url"]
    assert action.headers == SEED["headers"]
    assert action.when_not_to_use == SEED["when_not_to_use"]
    assert action.enabled is True
    assert action.retries == 2  # GET is idempotent
    assert action.needs_confirmation is False


@pytest.mark.parametrize("shape", ["single", "list", "config"])
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_file_shapes(tmp_path: Path, shape: str, suffix: str) -> None:
    import yaml

    data: Any = {"single": SEED, "list": [SEED], "config": {"actions": [SEED]}}[shape]
    path = tmp_path / f"actions{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    assert [a.tool_name for a in load_config(path).actions] == ["get_customer_account"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Book a Demo!", "book_a_demo"),
        ("Get Customer Account", "get_customer_account"),
        ("  Refund -- v2 ", "refund_--_v2"),
        ("Ünïcode ✓ name", "n_code_name"),
        ("x" * 100, "x" * 64),
    ],
)
def test_default_tool_name(name: str, expected: str) -> None:
    assert default_tool_name(name) == expected


def test_defaults_for_write_methods() -> None:
    config = parse_config({"actions": [http(method="POST"), http(name="b", method="PUT")]}, {})
    post, put = config.actions
    assert isinstance(post, HttpAction) and isinstance(put, HttpAction)
    assert post.retries == 0 and put.retries == 2
    assert post.needs_confirmation and put.needs_confirmation


def test_env_references_resolved_and_unset_listed() -> None:
    config = parse_config(
        {
            "upstream": {"api_key": "${OPENAI_KEY}", "base_url": "${BASE:-http://up.test/v1}"},
            "secrets": {"CRM": "${CRM_KEY}"},
        },
        environ={"CRM_KEY": "s3cr3t-value"},
    )
    assert config.secrets == {"CRM": "s3cr3t-value"}
    assert config.upstream.base_url == "http://up.test/v1"
    assert config.unset_env == ["OPENAI_KEY"]


def test_env_reference_inside_an_action_is_refused() -> None:
    err = refused(http(headers={"X-Key": "${CRM_KEY}"}))
    assert err.action == "Thing"
    assert "secrets" in err.reason


def test_agent_naming_unknown_action_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"agent 'support'.*unknown action 'nope'"):
        parse_config({"agents": [{"id": "support", "actions": ["nope"]}], "actions": []}, {})


# --- one test per save-time rule: each names the action and the field ------------------------


def assert_names(err: DefinitionError, field: str, reason_part: str) -> None:
    message = str(err)
    assert "'Thing'" in message, message
    assert field in message, message
    assert reason_part in message, message


def test_unknown_template_namespace() -> None:
    assert_names(refused(http(url="https://a.example/{{customer.id}}")), "url", "namespace")


def test_unknown_field_of_fixed_namespace() -> None:
    err = refused(http(headers={"X-C": "{{conversation.secret}}"}))
    assert_names(err, "headers.X-C", "unknown variable 'conversation.secret'")


@pytest.mark.parametrize(
    "url",
    [
        "https://{{args.host}}/x",
        "https://api.{{lead.domain}}.com/x",
        "https://api.example.com:{{args.port}}/x",
        "{{args.scheme}}://api.example.com/x",
    ],
)
def test_variable_in_scheme_host_or_port(url: str) -> None:
    err = refused(http(url=url, parameters={"host": {}, "port": {}, "scheme": {}}))
    assert err.field == "url"
    assert "scheme, host or port" in err.reason or "absolute URL" in err.reason


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ lead.email.__class__ }}", "exactly one field"),
        ("{{ ''.__class__.__mro__ }}", "unsupported template construct"),
        ("{{ lipsum() }}", "unsupported template construct"),
        ("{% for x in lead %}{{x}}{% endfor %}", "blocks are not allowed"),
        ("{{ lead.name | attr('x') }}", "filter 'attr' is not allowed"),
        ("{{ lead.name | default(lead.email) }}", "literal arguments"),
        ("{{ lead.name", "syntax error"),
    ],
)
def test_unsafe_template_constructs(template: str, reason: str) -> None:
    assert_names(refused(http(body={"note": template})), "body.note", reason)


@pytest.mark.parametrize("name", ["Bad Header", "X:Y", "Ünï", ""])
def test_invalid_header_name(name: str) -> None:
    assert_names(refused(http(headers={name: "v"})), "headers.", "invalid header name")


@pytest.mark.parametrize(
    "name", ["Host", "content-length", "Transfer-Encoding", "Connection", "Proxy-Authorization"]
)
def test_forbidden_header(name: str) -> None:
    assert_names(refused(http(headers={name: "v"})), f"headers.{name}", "set by the gateway")


def test_duplicate_tool_names() -> None:
    err = refused([http(), http(name="Other", tool_name="thing")])
    assert err.action == "Other" and err.field == "tool_name"
    assert "duplicate tool name" in err.reason


@pytest.mark.parametrize("tool_name", ["has space", "x" * 65, "ünï", "a.b"])
def test_tool_name_pattern(tool_name: str) -> None:
    assert_names(refused(http(tool_name=tool_name)), "tool_name", "^[a-zA-Z0-9_-]{1,64}$")


@pytest.mark.parametrize("url", ["ftp://api.example.com/x", "file:///etc/passwd", "gopher://h/"])
def test_non_http_scheme(url: str) -> None:
    err = refused(http(url=url))
    assert err.field == "url"
    assert "not allowed" in err.reason or "needs a host" in err.reason


def test_credentials_in_url_authority() -> None:
    assert_names(refused(http(url="https://user:pw@api.example.com/")), "url", "credentials")


def test_bad_jmespath() -> None:
    err = refused(http(response={"select": "items[?"}))
    assert_names(err, "response.select", "invalid JMESPath")


def test_unknown_maps_to_target() -> None:
    form = {
        "name": "Thing",
        "type": "form",
        "fields": [{"name": "email", "maps_to": "conversation.id"}],
    }
    assert_names(refused(form), "fields[0].maps_to", "unknown target")


def test_timeout_over_45_seconds() -> None:
    assert_names(refused(http(timeout_s=46)), "timeout_s", "45")


def test_unknown_field_is_refused() -> None:
    assert_names(refused(http(when_not_to_us="typo")), "when_not_to_us", "Extra inputs")


def test_undeclared_argument() -> None:
    err = refused(http(url="https://a.example/orders/{{args.id}}"))
    assert_names(err, "url", "not a declared parameter")


def test_form_variable_outside_a_form() -> None:
    assert_names(refused(http(body={"x": "{{form.email}}"})), "body.x", "form's submit")


def test_error_never_prints_a_secret_value() -> None:
    secret = "sk-live-THIS-MUST-NOT-LEAK"
    err = refused(http(headers={"Authorization": f"Bearer {secret}", "Bad Name": secret}))
    assert secret not in str(err)


def test_invalid_type_is_named() -> None:
    err = refused({"name": "Thing", "type": "webhook", "url": "https://a.example/"})
    assert err.field == "type"
