"""``import-openapi`` on the shapes big vendor specs use (issue 16, first part).

The specs here are written for these tests in the shapes found in public vendor specs — a
Stripe-like form API with an optional empty body on every GET and optional form fields, a
Xero-like authorization-code scheme, a FastAPI app's ``OAuth2PasswordBearer`` — not excerpts of
them. Each imported action runs once against a local server that checks what the spec
describes.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml

from gateway.definitions.config import parse_config
from gateway.engine.rendering import form_encode
from gateway.importers.openapi import OpenAPIImportError, Selection, import_openapi
from gateway.net.egress import EgressPolicy
from gateway.net.outbound import Outbound
from tests.support.action_api import ActionAPI, running_api
from tests.test_openapi_import import reload, runner, tools

FORM = "application/x-www-form-urlencoded"
EMPTY_FORM = {"content": {FORM: {"schema": {"type": "object", "properties": {}}}}}


def form_api() -> dict[str, Any]:
    customer = {
        "type": "object",
        "required": ["email"],
        "properties": {
            "email": {"type": "string", "description": "The customer's email."},
            "name": {"type": "string", "maxLength": 256},
            "balance": {"type": "integer", "default": 0},
            "preferred_locales": {"type": "array", "items": {"type": "string"}},
            "tax_exempt": {"type": "string", "enum": ["none", "exempt", "reverse"]},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "invoice_items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["price"],
                    "properties": {"price": {"type": "string"}, "quantity": {"type": "integer"}},
                },
            },
        },
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Payments", "version": "2023-08-16"},
        "servers": [{"url": "https://api.payments.example/"}],
        "components": {"securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}}},
        "security": [{"basicAuth": []}],
        "paths": {
            "/v1/customers": {
                "get": {
                    "operationId": "GetCustomers",
                    "summary": "List all customers",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "default": 0},
                        }
                    ],
                    "requestBody": EMPTY_FORM,  # on every GET: nothing in it
                    "responses": {"200": {"description": "ok"}},
                },
                "post": {
                    "operationId": "PostCustomers",
                    "summary": "Create a customer",
                    "requestBody": {"content": {FORM: {"schema": customer}}, "required": True},
                    "responses": {"200": {"description": "ok"}},
                },
            }
        },
    }


def user_token_api(scheme: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.0.0",
        "info": {"title": "Accounting", "version": "1"},
        "servers": [{"url": "https://api.accounting.example/api.xro/2.0"}],
        "components": {"securitySchemes": {"OAuth2": scheme}},
        "security": [{"OAuth2": ["accounting.settings"]}],
        "paths": {
            "/Accounts": {
                "get": {
                    "operationId": "getAccounts",
                    "summary": "Retrieves the full chart of accounts",
                    "parameters": [
                        {
                            "name": "where",
                            "in": "query",
                            "schema": {"anyOf": [{"type": "string"}, {"type": "string"}]},
                        }
                    ],
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }


AUTHORIZATION_CODE = {
    "type": "oauth2",
    "flows": {
        "authorizationCode": {
            "authorizationUrl": "https://login.accounting.example/identity/connect/authorize",
            "tokenUrl": "https://identity.accounting.example/connect/token",
            "scopes": {"accounting.settings": "Grant read-write access to settings"},
        }
    },
}
PASSWORD = {  # what FastAPI's OAuth2PasswordBearer(tokenUrl="token") puts in its spec
    "type": "oauth2",
    "flows": {"password": {"scopes": {}, "tokenUrl": "token"}},
}


@pytest.fixture
async def api() -> AsyncIterator[ActionAPI]:
    async with running_api() as state:
        yield state


@pytest.fixture
async def outbound() -> AsyncIterator[Outbound]:
    client = Outbound(EgressPolicy(["127.0.0.1"]))
    yield client
    await client.close()


def write(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


async def test_a_form_api_imports_lists_and_creates_with_optional_fields(
    tmp_path: Path, api: ActionAPI, outbound: Outbound
) -> None:
    result = import_openapi(str(write(tmp_path, form_api())), base_url=api.base_url + "/echo")
    env = {"BASIC_AUTH_USERNAME": "sk_test_user", "BASIC_AUTH_PASSWORD": "sk_test_pass"}
    actions = tools(reload(result, env))
    assert set(actions) == {"get_customers", "post_customers"}
    assert "optional request body without fields ignored" in dict(result.notes)["GetCustomers"]
    listing = actions["get_customers"]
    assert listing.body is None and "Default: 0." in listing.parameters["limit"].description
    create = actions["post_customers"]
    assert create.parameters["email"].required and not create.parameters["name"].required
    assert create.parameters["name"].description == "At most 256 characters."  # kept, in words
    metadata = create.parameters["metadata"]  # free-form: any keys, in bracket form
    assert metadata.type == "object" and not metadata.properties and not metadata.required
    assert "metadata[KEY]=VALUE" in metadata.description

    run = runner(outbound, reload(result, env))
    done = await run(listing, {})
    assert done.outcome == "success", done.content
    assert (api.last().method, api.last().body) == ("GET", b"")
    args = {
        "email": "jenny@example.com",
        "preferred_locales": ["en", "fr"],
        "balance": 0,
        "invoice_items": [{"price": "p_1", "quantity": 2}],
        "metadata": {"order_id": "6735", "channel": "chat"},
    }
    done = await run(create, args)
    assert done.outcome == "success", done.content
    got = api.last()
    assert got.headers["Content-Type"] == FORM
    sent = parse_qs(got.body.decode())
    assert sent == {
        "email": ["jenny@example.com"],
        "preferred_locales[0]": ["en"],
        "preferred_locales[1]": ["fr"],
        "balance": ["0"],
        "invoice_items[0][price]": ["p_1"],
        "invoice_items[0][quantity]": ["2"],
        "metadata[order_id]": ["6735"],
        "metadata[channel]": ["chat"],
    }  # name, tax_exempt: left out by the model, left out of the body


def test_form_encoding_uses_brackets_for_nested_values() -> None:
    data = {"metadata": {"order_id": "6735"}, "items": [{"price": "p_1", "quantity": 2}]}
    data["flag"] = True  # type: ignore[assignment]
    text = form_encode(data | {"note": "a b&c", "none": None})
    assert text == (
        "metadata[order_id]=6735&items[0][price]=p_1&items[0][quantity]=2&flag=true&note=a+b%26c"
    )


@pytest.mark.parametrize("scheme", [AUTHORIZATION_CODE, PASSWORD], ids=["authcode", "password"])
async def test_user_token_schemes_import_with_a_bearer_secret(
    tmp_path: Path, api: ActionAPI, outbound: Outbound, scheme: dict[str, Any]
) -> None:
    result = import_openapi(
        str(write(tmp_path, user_token_api(scheme))), base_url=api.base_url + "/echo"
    )
    assert result.config["secrets"] == {"OAUTH2": "${OAUTH2}"}
    config = reload(result, {"OAUTH2": "user-access-token-123"})
    accounts = tools(config)["get_accounts"]
    assert "One of the types" not in accounts.parameters["where"].description
    done = await runner(outbound, config)(accounts, {})
    assert done.outcome == "success", done.content
    assert api.last().headers["Authorization"] == "Bearer user-access-token-123"


def test_an_import_with_nothing_usable_exits_1_with_a_summary(tmp_path: Path) -> None:
    spec = user_token_api({"type": "apiKey", "in": "cookie", "name": "sid"})
    path = write(tmp_path, spec)
    exe = Path(sys.executable).parent / "actiongate"
    failed = subprocess.run(
        [str(exe), "import-openapi", str(path)], capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("error: import-openapi: 1 operations, 0 imported, 1 skipped")
    assert "cookie" in failed.stderr and failed.stderr.count("\n") == 1
    ok = subprocess.run(
        [str(exe), "import-openapi", str(write(tmp_path, form_api()))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("# Actions imported from")
    assert ok.stderr == "import-openapi: 2 operations, 2 imported, 0 skipped\n"


def messaging_api() -> dict[str, Any]:
    """Twilio-shaped: the account in the path, ``DateSent<``/``DateSent>`` filters, tags."""
    account = {"name": "AccountSid", "in": "path", "required": True, "schema": {"type": "string"}}
    sent = {"type": "string", "format": "date-time"}
    long_id = "ListIncomingPhoneNumberAssignedAddOnExtensionForSubresourceOfTheAccountResource"
    return {
        "openapi": "3.1.0",
        "info": {"title": "Messaging", "version": "1"},
        "servers": [{"url": "https://api.messaging.example"}],
        "webhooks": {"messageStatus": {"post": {"responses": {"200": {"description": "ok"}}}}},
        "paths": {
            "/2010-04-01/Accounts/{AccountSid}/Messages.json": {
                "parameters": [account],
                "get": {
                    "operationId": "ListMessage",
                    "tags": ["Api20100401Message"],
                    "summary": "Retrieve a list of messages",
                    "description": "Retrieve a list of messages belonging to the account.",
                    "parameters": [
                        {"name": "DateSent<", "in": "query", "schema": sent},
                        {"name": "DateSent>", "in": "query", "schema": sent},
                        {"name": "X-Region", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": {"description": "ok"}},
                },
            },
            "/2010-04-01/Accounts/{AccountSid}/Calls.json": {
                "parameters": [account],
                "get": {
                    "operationId": "ListCall",
                    "tags": ["Api20100401Call"],
                    "responses": {"200": {"description": "ok"}},
                },
            },
            "/v1/Extensions": {
                "get": {"operationId": long_id, "responses": {"200": {"description": "ok"}}}
            },
        },
    }


async def test_pinned_values_comparison_filters_and_descriptions(
    tmp_path: Path, api: ActionAPI, outbound: Outbound
) -> None:
    result = import_openapi(
        str(write(tmp_path, messaging_api())),
        base_url=api.base_url + "/echo",
        pins={"AccountSid": "{{secrets.ACCOUNT_SID}}", "X-Region": "eu1"},
    )
    assert result.config["secrets"] == {"ACCOUNT_SID": "${ACCOUNT_SID}"}
    config = reload(result, {"ACCOUNT_SID": "AC123abc"})
    messages = tools(config)["list_message"]
    assert "AccountSid" not in messages.parameters  # the operator's value, not the model's
    assert set(messages.parameters) == {"date_sent_before", "date_sent_after"}
    before = messages.parameters["date_sent_before"].description
    assert before.startswith("Sent as DateSent<: only results with DateSent before.")
    assert messages.description == "Retrieve a list of messages belonging to the account."
    done = await runner(outbound, config)(messages, {"date_sent_after": "2024-01-01"})
    assert done.outcome == "success", done.content
    got = api.last()
    assert got.path == "/echo/2010-04-01/Accounts/AC123abc/Messages.json"
    assert parse_qs(got.query_string) == {"DateSent>": ["2024-01-01"]}
    assert got.headers["X-Region"] == "eu1"
    long_name = [a["tool_name"] for a in result.config["actions"]][-1]
    assert len(long_name) <= 64 and re.fullmatch(r"[a-z_]+_[0-9a-f]{6}", long_name)
    assert long_name.startswith("list_incoming_phone_number_assigned_add_on_extension_")
    assert "1 webhooks (calls to you: not imported)" in result.summary()


def test_selection_by_tool_name_glob_tag_path_and_file(tmp_path: Path) -> None:
    spec = str(write(tmp_path, messaging_api()))

    def picked(**options: Any) -> list[str]:
        selection = Selection(**options)
        return [a["tool_name"] for a in import_openapi(spec, selection=selection).config["actions"]]

    assert picked(operations=["list_call"]) == ["list_call"]  # the printed tool name
    assert picked(operations=["ListM*", "list_c*"]) == ["list_message", "list_call"]
    assert len(picked(operations=["List*"])) == 3
    assert picked(tags=["Api20100401Message"]) == ["list_message"]
    assert picked(path_prefixes=["/v1/"]) == [picked(path_prefixes=["/v1/"])[0]]
    with pytest.raises(OpenAPIImportError, match="unknown operation 'nope_\\*'"):
        picked(operations=["nope_*"])
    names = tmp_path / "names.txt"
    names.write_text(
        "# the two lists\nListMessage\nGET /2010-04-01/Accounts/{AccountSid}/Calls.json\n"
    )
    exe = Path(sys.executable).parent / "actiongate"
    run = subprocess.run(
        [str(exe), "import-openapi", spec, "--operations-file", str(names), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines == [
        "GET /2010-04-01/Accounts/{AccountSid}/Messages.json  ListMessage [Api20100401Message]"
        "  imports as list_message",
        "GET /2010-04-01/Accounts/{AccountSid}/Calls.json  ListCall [Api20100401Call]"
        "  imports as list_call",
    ]


def test_more_tools_than_a_provider_accepts_is_a_warning(tmp_path: Path) -> None:
    paths = {
        f"/things/{n}": {"get": {"operationId": f"getThing{n}", "responses": {"200": {}}}}
        for n in range(130)
    }
    spec = {"openapi": "3.0.0", "info": {"title": "t", "version": "1"}, "paths": paths}
    result = import_openapi(str(write(tmp_path, spec)), base_url="https://api.example")
    warning = result.size_warning()
    assert warning is not None and warning.startswith("warning: 130 tools, more than OpenAI")
    assert "--tag" in warning and "characters" in warning


def orders_api() -> dict[str, Any]:
    line = {
        "type": "object",
        "required": ["price"],
        "properties": {
            "price": {"type": "string", "description": "The price id."},
            "quantity": {"type": "integer", "default": 1},
        },
    }
    body = {
        "type": "object",
        "required": ["customer", "lines"],
        "properties": {
            "customer": {
                "type": "object",
                "required": ["email"],
                "properties": {"email": {"type": "string", "format": "email"}},
            },
            "lines": {"type": "array", "items": line},
        },
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Orders", "version": "1"},
        "paths": {
            "/orders": {
                "post": {
                    "operationId": "createOrder",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": body}},
                    },
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }


async def test_a_nested_json_body_keeps_its_structure_in_every_format(
    tmp_path: Path, api: ActionAPI, outbound: Outbound
) -> None:
    from adapters import FORMATS, export_tools
    from gateway.definitions.tools import to_tool_definitions

    result = import_openapi(str(write(tmp_path, orders_api())), base_url=api.base_url + "/echo")
    config = reload(result, {})
    create = tools(config)["create_order"]
    customer, lines = create.parameters["customer"], create.parameters["lines"]
    assert customer.properties is not None and customer.properties["email"].required
    assert lines.items is not None and lines.items.properties is not None
    assert lines.items.properties["price"].required
    for fmt in FORMATS:
        exported = json.dumps(export_tools(to_tool_definitions(config.actions), fmt))
        assert '"email"' in exported and '"price"' in exported, fmt
    gemini = export_tools(to_tool_definitions(config.actions), "gemini")

    def objects(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if node.get("type") == "OBJECT":
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)

    assert all(o.get("properties") for o in objects(gemini))  # no empty OBJECT
    args = {"customer": {"email": "a@example.com"}, "lines": [{"price": "p_1", "quantity": 2}]}
    done = await runner(outbound, config)(create, args)
    assert done.outcome == "success", done.content
    assert json.loads(api.last().body) == args
    bad = await runner(outbound, config)(create, {"customer": {}, "lines": [{"quantity": 1}]})
    assert bad.outcome == "rejected"
    assert "'customer.email' is required" in bad.content and "'lines[0].price'" in bad.content


async def test_multipart_text_fields_are_sent_and_file_parts_left_out(
    tmp_path: Path, api: ActionAPI, outbound: Outbound
) -> None:
    from email.parser import BytesParser

    schema = {
        "type": "object",
        "required": ["subject"],
        "properties": {
            "subject": {"type": "string"},
            "note": {"type": "string"},
            "attachment": {"type": "string", "format": "binary"},
        },
    }
    spec = {
        "openapi": "3.0.0",
        "info": {"title": "Tickets", "version": "1"},
        "paths": {
            "/tickets": {
                "post": {
                    "operationId": "createTicket",
                    "requestBody": {
                        "required": True,
                        "content": {"multipart/form-data": {"schema": schema}},
                    },
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }
    result = import_openapi(str(write(tmp_path, spec)), base_url=api.base_url + "/echo")
    assert any("file parts are not supported" in n for _, n in result.notes)
    config = reload(result, {})
    create = tools(config)["create_ticket"]
    assert set(create.parameters) == {"subject", "note"}
    subject = 'Broken "mug"\r\n--x'
    done = await runner(outbound, config)(create, {"subject": subject})
    assert done.outcome == "success", done.content
    got = api.last()
    ctype = got.headers["Content-Type"]
    assert ctype.startswith("multipart/form-data; boundary=actiongate-")
    message = BytesParser().parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + got.body)
    parts = {
        p.get_param("name", header="content-disposition"): p.get_payload()
        for p in message.get_payload()
    }  # type: ignore[union-attr]
    assert parts == {"subject": subject}  # the optional note was left out


def test_multipart_names_cannot_break_out_of_their_part() -> None:
    from gateway.engine.rendering import multipart_encode

    text = multipart_encode({"meta": {'x"\r\nContent-Type: text/html': "v"}}, "B")
    assert text == (
        '--B\r\nContent-Disposition: form-data; name="meta[x%22%0D%0AContent-Type: text/html]"'
        "\r\n\r\nv\r\n--B--\r\n"
    )


# --- excerpts of real public specs (tests/openapi/vendor/README.md) ---------------------------

VENDOR = Path(__file__).parent / "openapi" / "vendor"


async def test_twilio_excerpt_sends_a_message_with_the_operators_account(
    api: ActionAPI, outbound: Outbound
) -> None:
    from adapters import FORMATS, export_tools
    from gateway.definitions.tools import to_tool_definitions

    result = import_openapi(
        str(VENDOR / "twilio_api_v2010.excerpt.json"),
        base_url=api.base_url + "/echo",
        pins={"AccountSid": "{{secrets.TWILIO_ACCOUNT_SID}}"},
    )
    assert result.skipped == []
    env = {
        "TWILIO_ACCOUNT_SID": "AC0123456789abcdef",
        "ACCOUNT_SID_AUTH_TOKEN_USERNAME": "AC0123456789abcdef",
        "ACCOUNT_SID_AUTH_TOKEN_PASSWORD": "twilio-auth-token-1",
    }
    config = reload(result, env)
    actions = tools(config)
    assert set(actions) == {"list_message", "create_message", "create_call"}
    for fmt in FORMATS:
        assert export_tools(to_tool_definitions(config.actions), fmt)
    listing = actions["list_message"]
    assert {"date_sent_before", "date_sent_after"} <= set(listing.parameters)
    create = actions["create_message"]
    to = next(name for name in create.parameters if name.lower() == "to")
    body = next(name for name in create.parameters if name.lower() == "body")
    assert create.parameters[to].required and not create.parameters[body].required
    done = await runner(outbound, config)(create, {to: "+15558675310", body: "Your order shipped."})
    assert done.outcome == "success", done.content
    got = api.last()
    assert (got.method, got.path) == (
        "POST",
        "/echo/2010-04-01/Accounts/AC0123456789abcdef/Messages.json",
    )
    assert got.headers["Content-Type"] == FORM
    assert parse_qs(got.body.decode()) == {"To": ["+15558675310"], "Body": ["Your order shipped."]}
    expected = base64.b64encode(b"AC0123456789abcdef:twilio-auth-token-1").decode()
    assert got.headers["Authorization"] == f"Basic {expected}"

    done = await runner(outbound, config)(
        listing, {"To": "+15558675310", "date_sent_before": "2026-12-01", "PageSize": 20}
    )
    assert done.outcome == "success", done.content
    got = api.last()
    assert (got.method, got.path) == (
        "GET",
        "/echo/2010-04-01/Accounts/AC0123456789abcdef/Messages.json",
    )
    assert parse_qs(got.query_string) == {
        "To": ["+15558675310"],
        "DateSent<": ["2026-12-01"],
        "PageSize": ["20"],
    }
    call = {"To": "+15558675310", "From": "+15017122661", "Url": "https://example.com/twiml"}
    done = await runner(outbound, config)(actions["create_call"], call)
    assert done.outcome == "success", done.content
    got = api.last()
    assert got.path == "/echo/2010-04-01/Accounts/AC0123456789abcdef/Calls.json"
    assert parse_qs(got.body.decode()) == {k: [v] for k, v in call.items()}
    assert got.headers["Authorization"] == f"Basic {expected}"


async def test_xero_excerpt_lists_accounts_with_a_user_token_and_the_tenant_pinned(
    api: ActionAPI, outbound: Outbound
) -> None:
    result = import_openapi(
        str(VENDOR / "xero_accounting.excerpt.json"),
        base_url=api.base_url + "/echo",
        pins={"xero-tenant-id": "{{secrets.XERO_TENANT_ID}}"},
    )
    env = {"OAUTH2": "xero-access-token-1", "XERO_TENANT_ID": "tenant-42"}
    config = reload(result, env)
    actions = tools(config)
    assert {"get_accounts", "create_account"} <= set(actions)
    done = await runner(outbound, config)(actions["get_accounts"], {"where": 'Status=="ACTIVE"'})
    assert done.outcome == "success", done.content
    got = api.last()
    assert (got.method, got.path) == ("GET", "/echo/Accounts")
    assert parse_qs(got.query_string) == {"where": ['Status=="ACTIVE"']}
    assert got.headers["Authorization"] == "Bearer xero-access-token-1"
    assert got.headers["xero-tenant-id"] == "tenant-42"

    account = {"Code": "201", "Name": "Support refunds", "Type": "EXPENSE"}
    done = await runner(outbound, config)(actions["create_account"], account)
    assert done.outcome == "success", done.content
    got = api.last()
    assert (got.method, got.path) == ("PUT", "/echo/Accounts")
    assert got.headers["Content-Type"] == "application/json"
    assert json.loads(got.body) == account  # optional fields the model left out stay out
    assert got.headers["Authorization"] == "Bearer xero-access-token-1"
    assert got.headers["xero-tenant-id"] == "tenant-42"


async def test_xero_excerpt_with_refresh_token_refreshes_at_the_schemes_token_url(
    api: ActionAPI, outbound: Outbound
) -> None:
    result = import_openapi(
        str(VENDOR / "xero_accounting.excerpt.json"),
        base_url=api.base_url + "/echo",
        pins={"xero-tenant-id": "{{secrets.XERO_TENANT_ID}}"},
        refresh_tokens=True,
    )
    text = result.to_yaml()
    assert "runs the refresh_token grant at" in text
    assert "https://identity.xero.com/connect/token" in text
    assert "stored" in text and "encrypted in the secret store" in text
    data = yaml.safe_load(text)
    auth = data["actions"][0]["auth"]
    assert {k: v for k, v in auth.items() if k != "scope"} == {
        "type": "oauth2_refresh_token",
        "token_url": "https://identity.xero.com/connect/token",
        "client_id": "{{secrets.OAUTH2_CLIENT_ID}}",
        "client_secret": "{{secrets.OAUTH2_CLIENT_SECRET}}",
        "refresh_token": "{{secrets.OAUTH2_REFRESH_TOKEN}}",
    }
    for action in data["actions"]:
        action["auth"]["token_url"] = api.base_url + "/token"  # the local token endpoint
    env = {
        "OAUTH2_CLIENT_ID": "xero-client-1",
        "OAUTH2_CLIENT_SECRET": "xero-client-secret-1",
        "OAUTH2_REFRESH_TOKEN": "xero-refresh-token-1",
        "XERO_TENANT_ID": "tenant-42",
    }
    config = parse_config(data, environ=env)
    done = await runner(outbound, config)(tools(config)["get_accounts"], {})
    assert done.outcome == "success", done.content
    token_request, got = api.received[-2:]
    assert (token_request.method, token_request.path) == ("POST", "/token")
    form = parse_qs(token_request.body.decode())
    assert form["grant_type"] == ["refresh_token"]
    assert form["refresh_token"] == ["xero-refresh-token-1"]
    assert (got.method, got.path) == ("GET", "/echo/Accounts")
    assert got.headers["Authorization"] == f"Bearer {api.current_token}"
    assert got.headers["xero-tenant-id"] == "tenant-42"


async def test_stripe_excerpt_lists_customers_and_creates_a_payment_intent_with_nested_fields(
    api: ActionAPI, outbound: Outbound
) -> None:
    from adapters import export_tools
    from gateway.definitions.tools import to_tool_definitions
    from tests.test_openapi_real_apps import check_exports

    result = import_openapi(
        str(VENDOR / "stripe_spec3.excerpt.json"), base_url=api.base_url + "/echo"
    )
    assert result.skipped == []
    # basic (key as user name, empty password: no secret can hold that) or bearer: the bearer
    config = reload(result, {"BEARER_AUTH": "sk_test_4eC39HqLyjWDarjtT1zdp7dc"})
    actions = tools(config)
    assert set(actions) == {
        "get_customers",
        "post_customers",
        "get_customers_customer",
        "post_payment_intents",
        "post_payment_intents_intent_confirm",
    }
    check_exports(config)
    intent = actions["post_payment_intents"]
    assert intent.parameters["amount"].required and intent.parameters["currency"].required
    assert "metadata[KEY]=VALUE" in intent.parameters["metadata"].description
    gemini = json.dumps(export_tools(to_tool_definitions([intent]), "gemini"))
    assert '"metadata"' not in gemini  # Gemini has no free-form OBJECT: left out there only
    assert '"metadata"' in json.dumps(export_tools(to_tool_definitions([intent]), "openai"))

    run = runner(outbound, config)
    done = await run(actions["get_customers"], {"email": "jenny@example.com", "limit": 3})
    assert done.outcome == "success", done.content
    got = api.last()
    assert (got.method, got.path, got.body) == ("GET", "/echo/v1/customers", b"")
    assert parse_qs(got.query_string) == {"email": ["jenny@example.com"], "limit": ["3"]}
    assert got.headers["Authorization"] == "Bearer sk_test_4eC39HqLyjWDarjtT1zdp7dc"

    args = {
        "amount": 2000,
        "currency": "eur",
        "customer": "cus_9s6XKzkNRiz8i3",
        "payment_method_types": ["sepa_debit"],
        "payment_method_data": {
            "type": "sepa_debit",
            "sepa_debit": {"iban": "DE89370400440532013000"},
            "billing_details": {"address": {"city": "Berlin"}},
        },
        "metadata": {"order_id": "6735"},
    }
    done = await run(intent, args)
    assert done.outcome == "success", done.content
    got = api.last()
    assert (got.method, got.path) == ("POST", "/echo/v1/payment_intents")
    assert got.headers["Content-Type"] == FORM
    assert parse_qs(got.body.decode()) == {
        "amount": ["2000"],
        "currency": ["eur"],
        "customer": ["cus_9s6XKzkNRiz8i3"],
        "payment_method_types[0]": ["sepa_debit"],
        "payment_method_data[type]": ["sepa_debit"],
        "payment_method_data[sepa_debit][iban]": ["DE89370400440532013000"],
        "payment_method_data[billing_details][address][city]": ["Berlin"],
        "metadata[order_id]": ["6735"],
    }  # every optional field the model left out stays out of the body

    done = await run(actions["post_customers"], {"email": "jenny@example.com", "name": "Jenny"})
    assert done.outcome == "success", done.content
    got = api.last()
    assert (got.method, got.path) == ("POST", "/echo/v1/customers")
    assert parse_qs(got.body.decode()) == {"email": ["jenny@example.com"], "name": ["Jenny"]}
    done = await run(actions["get_customers_customer"], {"customer": "cus_9s6XKzkNRiz8i3"})
    assert done.outcome == "success", done.content
    assert (api.last().method, api.last().path) == ("GET", "/echo/v1/customers/cus_9s6XKzkNRiz8i3")
    done = await run(actions["post_payment_intents_intent_confirm"], {"intent": "pi_3MtwBw"})
    assert done.outcome == "success", done.content
    assert (api.last().method, api.last().path) == (
        "POST",
        "/echo/v1/payment_intents/pi_3MtwBw/confirm",
    )
