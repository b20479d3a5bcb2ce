"""Tool export formats: each output checked against its provider's documented shape.

The JSON Schemas in ``tests/schemas/`` describe each API's ``tools`` field as its reference
documents it; the assertions below add the rules a schema cannot express well.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam
from openai.types.responses import FunctionToolParam
from pydantic import TypeAdapter

from adapters import FORMATS, ToolDefinition, export_tools
from adapters.gemini import to_gemini_schema
from adapters.openai import is_strict_compatible

SCHEMAS = Path(__file__).parent / "schemas"
GUARD = "When NOT to use: Do not use this action if the customer has not provided their email."


def _obj(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _tool(name: str, parameters: dict[str, Any], method: str = "GET", **kw: Any) -> ToolDefinition:
    return ToolDefinition(
        name=name,
        description=f"{name.replace('_', ' ').capitalize()}.\n\n{GUARD}",
        parameters=parameters,
        title=name.replace("_", " ").title(),
        read_only=method == "GET",
        destructive=method in {"POST", "PUT", "PATCH", "DELETE"},
        idempotent=method in {"GET", "PUT", "DELETE"},
        **kw,
    )


NO_PARAMS = _tool("ping_service", _obj({}, []))
OPTIONAL = _tool(
    "get_customer_account",
    _obj(
        {
            "email": {"type": "string", "description": "Customer email."},
            "note": {"type": "string", "description": "Free text."},
        },
        ["email"],
    ),
)
INT_ENUM = _tool(
    "set_priority",
    _obj({"level": {"type": "integer", "description": "Priority.", "enum": [1, 2, 3]}}, ["level"]),
    "PATCH",
)
STR_ENUM_ARRAY = _tool(
    "tag_ticket",
    _obj(
        {
            "tags": {"type": "array", "items": {"type": "string"}, "description": "Tags."},
            "color": {"type": "string", "enum": ["red", "green"]},
        },
        ["tags", "color"],
    ),
    "PUT",
)
NESTED = _tool(
    "create_order",
    _obj(
        {
            "address": _obj(
                {"city": {"type": "string"}, "zip": {"type": "string"}}, ["city", "zip"]
            ),
            "lines": {
                "type": "array",
                "items": _obj({"sku": {"type": "string"}, "qty": {"type": "integer"}}, ["sku"]),
            },
        },
        ["address", "lines"],
    ),
    "POST",
)
DELETE = _tool("delete_customer", _obj({"id": {"type": "string"}}, ["id"]), "DELETE")
FORM = _tool("book_a_demo", _obj({}, []), "POST", kind="form")
ALL = [NO_PARAMS, OPTIONAL, INT_ENUM, STR_ENUM_ARRAY, NESTED, DELETE, FORM]
HTTP = [d for d in ALL if d.kind == "http"]

# Gemini's Schema fields (google.ai.generativelanguage.v1beta.Schema) that this exporter emits.
GEMINI_KEYS = {"type", "format", "description", "nullable", "enum", "items", "properties"}
GEMINI_KEYS |= {"required", "minItems", "maxItems", "minimum", "maximum"}


def _validate(fmt: str, value: Any) -> None:
    schema = json.loads((SCHEMAS / f"{fmt}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)


def _schemas(schema: Any) -> list[dict[str, Any]]:
    """Every subschema of a Gemini or JSON Schema, the root first."""
    if not isinstance(schema, dict):
        return []
    found = [schema]
    for child in [schema.get("items"), *(schema.get("properties") or {}).values()]:
        found += _schemas(child)
    return found


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_matches_its_documented_shape_and_is_json(fmt: str) -> None:
    tools = export_tools(ALL, fmt)
    _validate(fmt, tools)
    assert json.loads(json.dumps(tools)) == tools


def test_formats_are_the_five_documented_names() -> None:
    assert FORMATS == ("openai", "openai-responses", "anthropic", "gemini", "mcp")


def test_openai_chat_wraps_the_function_and_keeps_the_schema() -> None:
    tools = export_tools(ALL, "openai")
    TypeAdapter(list[ChatCompletionFunctionToolParam]).validate_python(tools)
    assert [t["function"]["name"] for t in tools] == [d.name for d in ALL]
    for tool, definition in zip(tools, ALL, strict=True):
        assert tool["type"] == "function"
        assert tool["function"]["parameters"] == definition.parameters
        assert tool["function"]["description"] == definition.description
        assert GUARD in tool["function"]["description"]


def test_openai_responses_is_flat_and_strict_only_when_the_schema_allows() -> None:
    tools = export_tools(ALL, "openai-responses")
    TypeAdapter(list[FunctionToolParam]).validate_python(tools)
    strict = {t["name"]: t["strict"] for t in tools}
    assert strict == {
        "ping_service": True,
        "get_customer_account": False,  # optional "note" is not rewritten to nullable
        "set_priority": True,
        "tag_ticket": True,
        "create_order": False,  # "qty" in the line items is optional
        "delete_customer": True,
        "book_a_demo": True,
    }
    for tool, definition in zip(tools, ALL, strict=True):
        assert tool["parameters"] == definition.parameters
        assert tool["description"] == definition.description


@pytest.mark.parametrize(
    ("schema", "allowed"),
    [
        (_obj({"a": {"type": "string", "format": "email"}}, ["a"]), True),
        (_obj({"a": {"type": ["string", "null"]}}, ["a"]), True),
        (_obj({"a": {"type": "string", "default": "x"}}, ["a"]), False),
        (_obj({"a": {"type": "string", "format": "uri"}}, ["a"]), False),
        (_obj({"a": {"type": "string", "minLength": 2}}, ["a"]), False),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, False),
        (_obj({"a": {"type": "object", "properties": {}}}, ["a"]), False),
        ({"anyOf": [_obj({}, [])]}, False),
    ],
)
def test_strict_mode_rules(schema: dict[str, Any], allowed: bool) -> None:
    assert is_strict_compatible(schema) is allowed


def test_strict_mode_allows_ten_object_levels_and_no_more() -> None:
    schema = _obj({}, [])
    for _ in range(9):
        schema = _obj({"child": schema}, ["child"])
    assert is_strict_compatible(schema)
    assert not is_strict_compatible(_obj({"child": schema}, ["child"]))


def test_anthropic_uses_input_schema_unchanged() -> None:
    tools = export_tools(ALL, "anthropic")
    assert [set(t) for t in tools] == [{"name", "description", "input_schema"}] * len(ALL)
    for tool, definition in zip(tools, ALL, strict=True):
        assert tool["input_schema"] == definition.parameters
        assert tool["input_schema"]["type"] == "object"
        assert tool["description"] == definition.description


def test_gemini_declarations_use_only_gemini_schema_fields() -> None:
    (tool,) = export_tools(ALL, "gemini")
    declarations = {d["name"]: d for d in tool["functionDeclarations"]}
    assert list(declarations) == [d.name for d in ALL]
    for definition in ALL:
        assert declarations[definition.name]["description"] == definition.description
    for declaration in declarations.values():
        for node in _schemas(declaration.get("parameters")):
            assert set(node) <= GEMINI_KEYS, node
            assert node["type"] in {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"}
            assert "enum" not in node or node["type"] == "STRING"


def test_gemini_omits_parameters_for_a_tool_without_any() -> None:
    (tool,) = export_tools([NO_PARAMS], "gemini")
    assert tool["functionDeclarations"] == [
        {"name": "ping_service", "description": NO_PARAMS.description}
    ]
    assert export_tools([], "gemini") == []


def test_gemini_enums_strings_keep_values_numbers_move_to_the_description() -> None:
    (tool,) = export_tools([INT_ENUM, STR_ENUM_ARRAY], "gemini")
    level = tool["functionDeclarations"][0]["parameters"]["properties"]["level"]
    assert level == {"type": "INTEGER", "description": "Priority. Allowed values: 1, 2, 3."}
    params = tool["functionDeclarations"][1]["parameters"]
    assert params["properties"]["color"] == {
        "type": "STRING",
        "format": "enum",
        "enum": ["red", "green"],
    }
    assert params["properties"]["tags"]["items"] == {"type": "STRING"}
    assert params["required"] == ["tags", "color"]


def test_gemini_nested_objects_keep_properties_and_required() -> None:
    (tool,) = export_tools([NESTED], "gemini")
    params = tool["functionDeclarations"][0]["parameters"]
    assert params["properties"]["address"] == {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}, "zip": {"type": "STRING"}},
        "required": ["city", "zip"],
    }
    assert params["properties"]["lines"]["items"]["required"] == ["sku"]


def test_gemini_leaves_out_an_optional_free_form_object_and_keeps_a_required_one() -> None:
    schema = {
        "type": "object",
        "properties": {
            "amount": {"type": "integer"},
            "metadata": {"type": "object", "description": "Any keys."},
            "shipping": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "extra": {"type": "object"}},
            },
            "context": {"type": "object"},
        },
        "required": ["amount", "context"],
    }
    out = to_gemini_schema(schema)
    assert set(out["properties"]) == {"amount", "shipping", "context"}  # no metadata
    assert set(out["properties"]["shipping"]["properties"]) == {"name"}  # nested too
    assert out["properties"]["context"] == {"type": "OBJECT"}  # required: the tool needs it
    assert out["required"] == ["amount", "context"]


def test_gemini_schema_folds_what_it_cannot_express() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": ["integer", "null"],
        "title": "Count",
        "description": "How many.",
        "default": 1,
        "minimum": 0,
        "format": "int64",
    }
    assert to_gemini_schema(schema) == {
        "type": "INTEGER",
        "nullable": True,
        "format": "int64",
        "description": "How many. Default: 1.",
        "minimum": 0,
    }
    assert to_gemini_schema({"type": "string", "const": "x", "format": "email"}) == {
        "type": "STRING",
        "format": "enum",
        "enum": ["x"],
    }


@pytest.mark.parametrize("name", ["3d_print", "-lookup", "0" * 64])
def test_gemini_refuses_names_it_cannot_call(name: str) -> None:
    definition = _tool(name, _obj({}, []))
    assert export_tools([definition], "openai")  # valid for OpenAI ...
    with pytest.raises(ValueError, match=rf"{name!r} cannot be exported as gemini"):
        export_tools([definition], "gemini")  # ... but not for Gemini


def test_gemini_refuses_a_schema_without_a_single_type() -> None:
    bad = _tool("pick", _obj({"v": {"type": ["string", "integer"]}}, ["v"]))
    with pytest.raises(ValueError, match="'pick' cannot be exported as gemini"):
        export_tools([bad], "gemini")


@pytest.mark.parametrize("fmt", ["openai", "openai-responses", "anthropic"])
def test_openai_and_anthropic_refuse_invalid_names(fmt: str) -> None:
    with pytest.raises(ValueError, match=rf"'get customer' cannot be exported as {fmt}"):
        export_tools([_tool("get customer", _obj({}, []))], fmt)


def test_mcp_lists_http_tools_with_behaviour_hints() -> None:
    tools = {t["name"]: t for t in export_tools(ALL, "mcp")}
    assert list(tools) == [d.name for d in HTTP]  # the form needs the widget: not listed
    get, delete = tools["get_customer_account"], tools["delete_customer"]
    assert get["title"] == "Get Customer Account"
    assert get["annotations"] == {
        "title": "Get Customer Account",
        "readOnlyHint": True,
        "destructiveHint": False,
        "idempotentHint": True,
        "openWorldHint": True,
    }
    assert delete["annotations"]["readOnlyHint"] is False
    assert delete["annotations"]["destructiveHint"] is True
    assert delete["annotations"]["idempotentHint"] is True
    assert tools["create_order"]["annotations"]["idempotentHint"] is False
    for definition in HTTP:
        assert tools[definition.name]["inputSchema"] == definition.parameters
        assert tools[definition.name]["description"] == definition.description


def test_exports_do_not_share_state_with_the_definitions() -> None:
    before = copy.deepcopy(NESTED.parameters)
    export_tools([NESTED], "openai")[0]["function"]["parameters"]["properties"].clear()
    export_tools([NESTED], "openai-responses")[0]["parameters"]["required"].append("x")
    export_tools([NESTED], "anthropic")[0]["input_schema"]["properties"]["address"].clear()
    export_tools([NESTED], "mcp")[0]["inputSchema"]["properties"].clear()
    assert NESTED.parameters == before


def test_unknown_format_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown tool format 'claude'") as info:
        export_tools(ALL, "claude")
    for fmt in FORMATS:
        assert fmt in str(info.value)
