"""The wizard's editors to a definition and back, the Test panel's typed inputs, the preview."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.admin.dashboard.editors import MAX_ROWS, editor_rows
from gateway.admin.dashboard.forms import definition_form, merge_edit, parse_definition
from gateway.admin.dashboard.request_fields import editor_field
from gateway.admin.dashboard.testinputs import (
    captured_lead_fields,
    panel_inputs,
    parse_test_form,
    preview,
)
from gateway.admin.dashboard.views import step_of
from gateway.admin.service import MASK, mask, unmask
from gateway.definitions.config import parse_action
from gateway.definitions.tools import to_tool_definition
from gateway.errors import RequestError

SEED = {
    "name": "Get Customer Account",
    "type": "http",
    "method": "GET",
    "url": "https://api.yourcompany.com/customers?email={{lead.email}}",
    "headers": {"Authorization": "Bearer YOUR_API_KEY", "Content-Type": "application/json"},
    "when_not_to_use": "Do not use this action if the customer has not provided their email "
    "address or if they are asking a general question.",
}

ORDER = {
    "name": "Place Order",
    "type": "http",
    "method": "POST",
    "url": "https://shop.example.com/orders/{{args.sku}}",
    "query": {"channel": "{{conversation.channel}}"},
    "headers": {"X-Api-Key": "{{secrets.SHOP}}"},
    "body": {"email": "{{lead.email}}", "note": "{{message.content}}", "qty": "{{args.qty}}"},
    "parameters": {
        "sku": {"type": "string", "description": "The product", "required": True},
        "qty": {"type": "integer", "enum": [1, 2, 5]},
        "gift": {"type": "boolean"},
        "price": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "integer"}},
    },
    "auth": {"type": "headers", "headers": {"X-Shop-Token": "{{secrets.SHOP}}"}},
    "response": {"select": "order.id", "max_chars": 500},
    "health_check": {"every": "5m", "expect_status": [200, 204], "live": True},
    "description": "Order a product for the customer.",
    "when_not_to_use": "Never without the customer's consent.",
}


def _form(**fields: str) -> dict[str, str]:
    return {"type": "http", "name": "Lookup", "url": "https://api.example.com/x", **fields}


def test_rows_become_headers_query_and_arguments() -> None:
    form = _form(
        **{
            "header-0-name": "Authorization",
            "header-0-value": "Bearer {{secrets.CRM}}",
            "header-1-name": "",  # the blank row the page always shows
            "header-1-value": "",
            "query-3-name": "email",
            "query-3-value": "{{lead.email}}",
            "param-0-name": "qty",
            "param-0-type": "integer",
            "param-0-required": "on",
            "param-0-enum": "1, 2,5",
            "param-0-description": "How many",
            "param-1-name": "",
            "param-1-type": "boolean",  # a choice alone does not make a row
            "param-1-required": "on",
        }
    )
    data = parse_definition(form)
    assert data["headers"] == {"Authorization": "Bearer {{secrets.CRM}}"}
    assert data["query"] == {"email": "{{lead.email}}"}
    assert data["parameters"] == {
        "qty": {"type": "integer", "description": "How many", "required": True, "enum": [1, 2, 5]}
    }
    parse_action(data)


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"header-0-name": "", "header-0-value": "x"}, "headers", "Headers, row 1: the name"),
        (
            {"header-0-name": "A", "header-0-value": "1", "header-1-name": "A"},
            "headers",
            "Headers, row 2: 'A' is already set",
        ),
        (
            {"param-0-name": "n", "param-0-type": "integer", "param-0-enum": "one"},
            "parameters",
            "'one' is not a integer",
        ),
        ({"param-0-name": "n", "param-0-type": "date"}, "parameters", "row 1 (n): type must be"),
        ({"param-0-description": "nameless"}, "parameters", "row 1: the name is empty"),
        ({"body": "{not json"}, "body", "Body: not valid JSON"),
        ({"url": "api.example.com/x"}, "url", "URL: 'api.example.com/x' does not start with"),
        (
            {"health_on": "on", "health_expect_status": "ok"},
            "health_expect_status",
            "whole numbers",
        ),
    ],
)
def test_a_bad_row_is_named(fields: dict[str, str], param: str, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_definition(_form(**fields))
    assert caught.value.param == param
    assert message in str(caught.value)


@pytest.mark.parametrize("definition", [SEED, ORDER], ids=["seed", "order"])
def test_editors_round_trip_a_definition(definition: dict[str, Any]) -> None:
    again = parse_definition(definition_form(definition))
    expected = dict(definition)
    # The editors keep what a row shows; an array's item schema stays in the stored definition.
    if "parameters" in expected:
        expected["parameters"] = {
            k: {key: v for key, v in p.items() if key != "items"}
            for k, p in expected["parameters"].items()
        }
    assert again == expected
    assert parse_action(merge_edit(definition, again)) == parse_action(definition)


def test_a_form_action_round_trips_through_the_field_rows() -> None:
    definition = {
        "name": "Start a return",
        "type": "form",
        "title": "Return",
        "fields": [
            {
                "name": "email",
                "type": "email",
                "label": "Email",
                "required": True,
                "maps_to": "lead.email",
            },
            {"name": "reason", "type": "select", "options": ["broken", "late"]},
            {"name": "order", "type": "text", "pattern": "[A-Z]-\\d+", "maps_to": "lead.order"},
        ],
    }
    form = definition_form(definition)
    assert form["field-1-options"] == "broken, late"
    assert parse_definition(form) == definition
    assert captured_lead_fields([parse_action(definition)]) == ["lead.order"]
    # The picker offers a form's own fields as {{form.NAME}} for its submit request.
    assert preview(definition)["form_fields"] == ["email", "reason", "order"]


def test_the_raw_definition_replaces_the_editors_when_ticked() -> None:
    raw = '{"name": "Raw", "url": "https://api.example.com/raw", "retries": 1}'
    form = _form(use_raw="on", definition_json=raw, **{"header-0-name": "Ignored"})
    assert parse_definition(form) == {
        "name": "Raw",
        "url": "https://api.example.com/raw",
        "retries": 1,
    }
    with pytest.raises(RequestError) as caught:
        parse_definition(_form(use_raw="on", definition_json="[1]"))
    assert caught.value.param == "definition_json"
    # An edit in the raw view is the whole definition: nothing stored beyond it is kept.
    old = {**SEED, "retries": 3, "timeout_s": 5}
    assert "retries" not in merge_edit(old, {"name": "X", "url": SEED["url"]}, raw=True)
    assert merge_edit(old, {"name": "X", "url": SEED["url"]})["timeout_s"] == 5


def test_an_edit_keeps_what_the_rows_do_not_show() -> None:
    old = {
        **ORDER,
        "health_check": {
            **ORDER["health_check"],
            "vars": {"lead.email": "a@b.c"},
            "args": {"sku": "A"},
        },
        "response": {**ORDER["response"], "redact": ["card"]},
    }
    merged = merge_edit(old, parse_definition(definition_form(old)))
    assert merged["parameters"]["tags"]["items"] == {"type": "integer"}
    assert merged["health_check"]["vars"] == {"lead.email": "a@b.c"}
    assert merged["response"]["redact"] == ["card"]
    # A changed type drops the nested schema that belonged to the old one.
    form = definition_form(old) | {"param-4-type": "string"}
    assert "items" not in merge_edit(old, parse_definition(form))["parameters"]["tags"]


def test_editor_rows_show_one_blank_row_and_two_after_add() -> None:
    form = _form(**{"header-0-name": "A", "header-0-value": "1", f"header-{MAX_ROWS}-name": "B"})
    rows = editor_rows(form)
    assert [r["name"] for r in rows["header"]] == ["A", ""]
    assert len(editor_rows(form, add="header")["header"]) == 3
    assert len(editor_rows({}, add="param")["param"]) == 2


def test_the_test_panel_asks_for_each_variable_and_typed_argument() -> None:
    action = parse_action(ORDER)
    inputs = {i.name: i for i in panel_inputs(action)}
    assert list(inputs) == [
        "conversation.channel",
        "lead.email",
        "message.content",
        "args.sku",
        "args.qty",
        "args.gift",
        "args.price",
        "args.tags",
    ]
    # Secrets are the gateway's to fill; a variable in the URL or a header is required.
    assert not any(name.startswith("secrets.") for name in inputs)
    assert inputs["args.sku"].required and "The product" in inputs["args.sku"].hint
    assert not inputs["lead.email"].required  # only in the body
    assert inputs["args.qty"].control == "select" and inputs["args.qty"].options == ("1", "2", "5")
    assert inputs["args.gift"].control == "checkbox"
    assert (inputs["args.price"].control, inputs["args.price"].step) == ("number", "any")
    assert inputs["args.tags"].control == "text"


def test_test_values_are_typed_from_the_schema() -> None:
    action = parse_action(ORDER)
    form = {
        "var:lead.email": " jane@example.com ",
        "var:conversation.channel": "",
        "arg:sku": "A-1",
        "arg:qty": "2",
        "arg:gift": "on",
        "arg:price": "9.5",
        "arg:tags": "1, 2",
        "csrf": "x",
    }
    variables, args = parse_test_form(form, action.parameters)
    assert variables == {"lead": {"email": "jane@example.com"}}
    assert args == {"sku": "A-1", "qty": 2, "gift": True, "price": 9.5, "tags": [1, 2]}
    _, unticked = parse_test_form({"arg:sku": "A"}, action.parameters)
    assert unticked == {"sku": "A", "gift": False}
    for field, value, message in [
        ("arg:price", "cheap", "args.price: expected a number"),
        ("arg:qty", "3", "args.qty: choose one of the listed values"),
        ("arg:tags", "1, x", "args.tags: expected a whole number"),
    ]:
        with pytest.raises(RequestError) as caught:
            parse_test_form({field: value}, action.parameters)
        assert str(caught.value) == message and caught.value.param == "args"


def test_the_preview_is_the_tool_description_the_model_sees() -> None:
    shown = preview(SEED)
    assert shown["ok"] and shown["tool_name"] == "get_customer_account"
    assert shown["description"] == to_tool_definition(parse_action(SEED)).description
    assert shown["description"].endswith(
        "When NOT to use: Do not use this action if the customer has not provided their email "
        "address or if they are asking a general question."
    )
    assert [i["name"] for i in shown["inputs"]] == ["lead.email"]
    broken = preview({**SEED, "method": "FETCH"})
    assert not broken["ok"] and "method" in broken["error"]
    assert preview(None, "Body: not valid JSON") == {"ok": False, "error": "Body: not valid JSON"}


@pytest.mark.parametrize(
    "secret", [None, "{{secrets.XERO_CLIENT_SECRET}}"], ids=["public", "confidential"]
)
def test_a_refresh_token_auth_round_trips_through_the_credentials_step(secret: str | None) -> None:
    auth: dict[str, Any] = {
        "type": "oauth2_refresh_token",
        "token_url": "https://identity.xero.com/connect/token",
        "client_id": "{{secrets.XERO_CLIENT_ID}}",
        "refresh_token": "{{secrets.XERO_REFRESH_TOKEN}}",
    }
    if secret is not None:
        auth["client_secret"] = secret
    definition = {**SEED, "auth": auth}
    again = parse_definition(definition_form(definition))
    assert again["auth"] == auth
    assert parse_action(merge_edit(definition, again)) == parse_action(definition)


RETURN_FORM: dict[str, Any] = {
    "name": "Start a return",
    "type": "form",
    "title": "Return",
    "fields": [{"name": "email", "type": "email"}, {"name": "order", "type": "text"}],
    "submit": {
        "method": "POST",
        "url": "https://shop.example.com/returns/{{form.order}}",
        "headers": {"X-Api-Key": "{{secrets.SHOP}}", "X-Channel": "chat"},
        "query": {"source": "{{conversation.channel}}"},
        "body": {"email": "{{form.email}}", "order": "{{form.order}}"},
        "auth": {"type": "basic", "username": "shop", "password": "{{secrets.SHOP}}"},
    },
}

RESEND_BUTTON: dict[str, Any] = {
    "name": "Resend the invoice",
    "type": "button",
    "label": "Resend invoice",
    "on_click": {
        "http": {
            "method": "PUT",
            "url": "https://billing.example.com/invoices/resend",
            "headers": {"Content-Type": "application/json"},
            "body": {"to": "{{lead.email}}"},
            "auth": {"type": "headers", "headers": {"X-Billing-Token": "{{secrets.BILLING}}"}},
        }
    },
}


def _stored(definition: dict[str, Any]) -> dict[str, Any]:
    """``definition`` as the admin API returns it: every default spelled out."""
    return parse_action(definition).model_dump(mode="json", by_alias=True, exclude_none=True)


def test_a_form_submit_request_fills_its_own_editors_and_round_trips() -> None:
    form = definition_form(RETURN_FORM)
    # The HTTP action's editors, prefixed: no JSON but the body's.
    assert form["submit_method"] == "POST"
    assert form["submit_url"] == RETURN_FORM["submit"]["url"]
    assert (form["submit_header-1-name"], form["submit_header-1-value"]) == ("X-Channel", "chat")
    assert form["submit_query-0-value"] == "{{conversation.channel}}"
    assert (form["submit_auth_type"], form["submit_auth_username"]) == ("basic", "shop")
    assert "form_submit" not in form and "method" not in form and "auth_type" not in form
    assert parse_definition(form) == RETURN_FORM


def test_a_button_http_request_fills_its_own_editors_and_round_trips() -> None:
    form = definition_form(RESEND_BUTTON)
    assert form["button_click"] == "http"
    assert (form["button_method"], form["button_url"]) == (
        "PUT",
        "https://billing.example.com/invoices/resend",
    )
    assert form["button_authheader-0-name"] == "X-Billing-Token"
    assert parse_definition(form) == RESEND_BUTTON
    # Choosing "Open a link" sends no request, whatever the request editor still holds.
    link = form | {"button_click": "navigate", "button_navigate": "https://shop.example.com/help"}
    assert parse_definition(link)["on_click"] == {"navigate": "https://shop.example.com/help"}
    navigate = {**RESEND_BUTTON, "on_click": {"navigate": "https://shop.example.com/help"}}
    assert definition_form(navigate)["button_click"] == "navigate"
    assert parse_definition(definition_form(navigate)) == navigate


@pytest.mark.parametrize("definition", [RETURN_FORM, RESEND_BUTTON], ids=["form", "button"])
def test_saving_an_unchanged_request_editor_keeps_every_stored_setting(
    definition: dict[str, Any],
) -> None:
    request = definition.get("submit") or definition["on_click"]["http"]
    tuned = {**request, "timeout_s": 3.5, "retries": 4, "propagate_trace": True}
    tuned["response"] = {"select": "id", "redact": ["card"], "max_chars": 900}
    if "submit" in definition:
        stored = _stored({**definition, "submit": tuned})
    else:
        stored = _stored({**definition, "on_click": {"http": tuned}})
    merged = merge_edit(stored, parse_definition(definition_form(stored)))
    assert _stored(merged) == stored
    # A changed method gets that method's default retries, as for an HTTP action.
    prefix = "submit_" if "submit" in definition else "button_"
    form = definition_form(stored) | {f"{prefix}method": "GET"}
    changed = _stored(merge_edit(stored, parse_definition(form)))
    sent = changed.get("submit") or changed["on_click"]["http"]
    assert (sent["method"], sent["retries"], sent["timeout_s"]) == ("GET", 2, 3.5)


def test_a_form_without_a_submit_url_or_anything_else_sends_nothing() -> None:
    form = definition_form(RETURN_FORM)
    empty = {k: v for k, v in form.items() if not k.startswith("submit_")}
    assert "submit" not in parse_definition(empty | {"submit_method": "POST"})


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        (
            {"submit_url": "ftp://shop.example.com/returns"},
            "submit_url",
            "Submit request URL: 'ftp://shop.example.com/returns' does not start with http://",
        ),
        ({"submit_method": "FETCH"}, "submit_method", "Submit request method: 'FETCH' is not"),
        (
            {"submit_url": "", "submit_header-0-name": "X-A", "submit_header-0-value": "1"},
            "submit_url",
            "Submit request URL: the URL is empty",
        ),
        (
            {"submit_header-2-name": "", "submit_header-2-value": "orphan"},
            "submit_headers",
            "Submit request headers, row 3: the name is empty",
        ),
        ({"submit_body": "{not json"}, "submit_body", "Submit request body: not valid JSON"),
    ],
)
def test_a_bad_submit_request_field_is_named(
    fields: dict[str, str], param: str, message: str
) -> None:
    with pytest.raises(RequestError) as caught:
        parse_definition(definition_form(RETURN_FORM) | fields)
    assert caught.value.param == param
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"button_url": "www.example.com"}, "button_url", "Button request URL: 'www.example.com'"),
        ({"button_url": " "}, "button_url", "Button request URL: the URL is empty"),
        ({"button_method": "get"}, "button_method", "Button request method: 'get' is not"),
        (
            {"button_auth_type": "headers", "button_authheader-0-name": ""},
            "button_auth",
            "Button request auth headers, row 1: the name is empty",
        ),
    ],
)
def test_a_bad_button_request_field_is_named(
    fields: dict[str, str], param: str, message: str
) -> None:
    with pytest.raises(RequestError) as caught:
        parse_definition(definition_form(RESEND_BUTTON) | fields)
    assert caught.value.param == param
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("param", "field", "step"),
    [
        ("submit.url", "submit_url", 2),
        ("submit.headers.X-Key", "submit_headers", 2),
        ("submit.auth.token_url", "submit_auth", 3),
        ("on_click.http.body", "button_body", 2),
        ("on_click.HttpClick.http.auth.bearer.token", "button_auth", 3),
        ("on_click.navigate", "button_navigate", 2),
        ("submit_auth_type", "submit_auth_type", 3),
        ("headers.X-Key", "headers", 2),
        ("auth.token_url", "auth", 3),
    ],
)
def test_a_saved_definition_error_is_shown_at_its_editor_field(
    param: str, field: str, step: int
) -> None:
    assert editor_field(param) == field
    assert step_of(editor_field(param)) == step


def test_a_masked_credential_in_a_request_editor_is_kept_on_save() -> None:
    literal = {"type": "bearer", "token": "literal-TOKEN-1"}
    stored = _stored(
        {
            **RESEND_BUTTON,
            "on_click": {"http": {**RESEND_BUTTON["on_click"]["http"], "auth": literal}},
        }
    )
    shown = mask(stored)
    form = definition_form(shown)
    assert form["button_auth_token"] == MASK  # the page never holds the credential
    # Saving the page as it is sends the mask back, which the service trades for the stored value.
    assert _stored(unmask(merge_edit(shown, parse_definition(form)), stored)) == stored
