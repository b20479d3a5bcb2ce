"""Strict parsing of model-supplied tool-call arguments (gateway/engine/arguments.py)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.definitions.actions import Parameter, ParamType
from gateway.engine.arguments import DEFAULT_LIMITS, ArgumentLimits, parse_arguments
from gateway.errors import ArgumentError, ExecutionRefused

TOOL = "get_order"
PARAMS: dict[str, Parameter] = {
    "order_id": Parameter(type="string", required=True),
    "limit": Parameter(type="integer"),
    "price": Parameter(type="number"),
    "urgent": Parameter(type="boolean"),
    "tags": Parameter(type="array"),
    "sizes": Parameter(type="array", items=Parameter(type="integer")),
    "filter": Parameter(type="object"),
    "status": Parameter(type="string", enum=["open", "closed"]),
}


def refuse(raw: Any, params: dict[str, Parameter] | None = None, **kwargs: Any) -> str:
    """Parse arguments that must be refused; return the message the model would read."""
    with pytest.raises(ArgumentError) as info:
        parse_arguments(raw, PARAMS if params is None else params, tool=TOOL, **kwargs)
    message = str(info.value)
    assert message.startswith(f'Invalid arguments for tool "{TOOL}": ')
    return message


def ok(raw: Any, params: dict[str, Parameter] | None = None) -> dict[str, Any]:
    return parse_arguments(raw, PARAMS if params is None else params, tool=TOOL)


# 1. Limits: size (UTF-8 bytes), nesting depth, number of keys and items.


def test_size_cap_counts_utf8_bytes_not_characters() -> None:
    text = "é" * 33_000  # 33,000 characters but 66,000 bytes
    message = refuse(json.dumps({"order_id": text}, ensure_ascii=False))
    assert "too large (more than 65,536 bytes)" in message
    assert "order_id (string, required)" in message  # the model still learns what to send
    assert ok(json.dumps({"order_id": "é" * 9_000}, ensure_ascii=False)) == {
        "order_id": "é" * 9_000
    }


def test_depth_cap_names_the_field() -> None:
    deep: Any = "x"
    for _ in range(16):
        deep = [deep]
    message = refuse(json.dumps({"order_id": "a", "filter": {"k": deep}}))
    assert "'filter.k[0][0]" in message and "nested too deeply (more than 16 levels" in message
    many = refuse(json.dumps({"order_id": "a", "filter": {"k": [deep] * 50}}))
    assert many.count("nested too deeply") == 10 and "; and 40 more problems." in many
    shallow = {"order_id": "a", "filter": {"k": [[["x"]]]}}
    assert ok(json.dumps(shallow)) == shallow


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    value = '[[[[[[[[[[{{{{{{{{{{"\\"[[[[[[[[[[[[[[[[[['
    assert ok(json.dumps({"order_id": value})) == {"order_id": value}


def test_item_cap_refuses_instead_of_walking_everything() -> None:
    message = refuse(json.dumps({"order_id": "a", "sizes": list(range(1_000))}))
    assert "too many keys and items (more than 1,000)" in message
    assert ok(json.dumps({"order_id": "a", "sizes": list(range(998))}))["sizes"][-1] == 997


def test_deep_mapping_input_is_refused_without_recursion() -> None:
    deep: Any = {}
    for _ in range(100_000):
        deep = {"k": deep}
    message = refuse({"order_id": "a", "filter": deep})
    assert "'filter.k.k" in message and "nested too deeply" in message


# 2. Nothing means no arguments.


@pytest.mark.parametrize("raw", [None, "", "   ", "\n\t ", {}])
def test_empty_input_means_no_arguments(raw: Any) -> None:
    assert parse_arguments(raw, {"q": Parameter()}, tool=TOOL) == {}
    assert refuse(raw).count("'order_id' is required") == 1


# 3. JSON only.


def test_duplicate_keys_are_refused() -> None:
    message = refuse('{"order_id": "a", "limit": 1, "limit": 2}')
    assert "the key 'limit' appears more than once" in message
    assert "appears more than once" in refuse('{"order_id": "a", "filter": {"x": 1, "x": 1}}')


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused(constant: str) -> None:
    message = refuse(f'{{"order_id": "a", "price": {constant}}}')
    assert f"{constant} is not valid JSON" in message


def test_overflowing_number_is_refused_as_not_finite() -> None:
    assert "'price' must be a finite number (got number inf)" in refuse(
        '{"order_id": "a", "price": 1e999}'
    )


def test_trailing_data_is_refused() -> None:
    message = refuse('{"order_id": "a"} {"order_id": "b"}')
    assert "not valid JSON: Extra data (line 1, column 19)" in message


@pytest.mark.parametrize(
    ("raw", "got"),
    [
        ('["a"]', "an array of 1 item"),
        ('"{\\"order_id\\": \\"a\\"}"', 'string "{\\"order_id\\": \\"a\\"}"'),
        ("42", "number 42"),
        ("null", "null"),
        ("{'order_id': 'a'}", None),  # Python, not JSON
    ],
)
def test_top_level_must_be_a_json_object(raw: str, got: str | None) -> None:
    message = refuse(raw)
    if got is None:
        assert "not valid JSON: Expecting property name enclosed in double quotes" in message
    else:
        assert f"the arguments must be a JSON object (got {got})" in message


def test_digit_bomb_is_refused() -> None:
    assert "too many digits" in refuse('{"order_id": "a", "limit": ' + "9" * 5_000 + "}")


# 4. Unknown fields.


def test_unknown_fields_are_named_with_the_accepted_list() -> None:
    message = refuse('{"orderId": "a", "order_id": "a", "colour": "red"}')
    assert "unknown arguments 'orderId', 'colour'" in message
    assert message.endswith(
        "Accepted arguments: order_id (string, required), limit (integer), price (number), "
        "urgent (boolean), tags (array of string), sizes (array of integer), filter (object), "
        "status (string)."
    )
    assert "This tool takes no arguments." in refuse('{"x": 1}', {})


# 5. Required and null.


@pytest.mark.parametrize(
    ("raw", "suffix"),
    [
        ("{}", ""),
        ('{"order_id": null}', " (got null)"),
        ('{"order_id": "   "}', ' (got string "   ")'),
        ('{"order_id": ""}', " (got an empty string)"),
    ],
)
def test_missing_null_or_blank_required_field_is_refused(raw: str, suffix: str) -> None:
    assert f"'order_id' is required{suffix}" in refuse(raw)


def test_optional_null_is_dropped_and_optional_empty_kept() -> None:
    assert ok('{"order_id": "a", "limit": null, "status": null, "tags": []}') == {
        "order_id": "a",
        "tags": [],
    }
    assert ok({"order_id": "a", "urgent": None}) == {"order_id": "a"}


# 6. Types and enums.

TYPE_CASES = [
    ("limit", 5, ["5", 5.0, 5.5, True, [5]], "an integer"),
    ("price", 2.5, ["2.5", False, {"v": 1}], "a finite number"),
    ("urgent", False, ["false", 0, 1], "a boolean (true or false)"),
    ("tags", ["a"], ["a", {"0": "a"}], "an array"),
    ("filter", {"a": [1, None]}, [[], "{}"], "an object"),
    ("order_id", "a", [1, True, ["a"], {}], "a string"),
]


@pytest.mark.parametrize(("name", "good", "bads", "words"), TYPE_CASES)
def test_types_are_strict(name: str, good: Any, bads: list[Any], words: str) -> None:
    base = {"order_id": "x"}
    assert ok(json.dumps({**base, name: good}))[name] == good
    for bad in bads:
        message = refuse(json.dumps({**base, name: bad}))
        assert f"'{name}' must be {words} (got " in message, message


def test_integer_refuses_integral_floats_and_booleans() -> None:
    assert "'limit' must be an integer (got number 5.0)" in refuse('{"order_id":"a","limit":5.0}')
    assert "'limit' must be an integer (got boolean true)" in refuse(
        '{"order_id":"a","limit":true}'
    )
    assert ok('{"order_id": "a", "price": 3}')["price"] == 3


def test_array_items_are_checked_against_items() -> None:
    message = refuse('{"order_id": "a", "sizes": [1, "2", 3.0], "tags": ["a", null]}')
    assert "'sizes[1]' must be an integer (got string \"2\")" in message
    assert "'sizes[2]' must be an integer (got number 3.0)" in message
    assert "'tags[1]' must be a string (got null)" in message


def test_enum_is_case_sensitive_and_type_exact() -> None:
    message = refuse('{"order_id": "a", "status": "Open"}')
    assert '\'status\' must be one of "open", "closed" (got string "Open")' in message
    assert ok('{"order_id": "a", "status": "closed"}')["status"] == "closed"
    flags = {"level": Parameter(type="integer", enum=[1, 2])}
    assert ok('{"level": 2}', flags) == {"level": 2}
    assert "'level' must be an integer (got boolean true)" in refuse('{"level": true}', flags)
    picks = {"pick": Parameter(type="array", items=Parameter(enum=["a", "b"]))}
    assert '\'pick[1]\' must be one of "a", "b"' in refuse('{"pick": ["a", "c"]}', picks)


# 7. Strings.


def test_long_strings_are_refused() -> None:
    message = refuse(json.dumps({"order_id": "a" * 10_001}))
    assert "'order_id' is too long (10,001 characters; at most 10,000)" in message


def test_nul_and_unpaired_surrogates_are_refused_anywhere() -> None:
    assert "'order_id' must not contain a NUL character" in refuse('{"order_id": "a\\u0000b"}')
    message = refuse('{"order_id": "a", "filter": {"k\\u0000": "\\ud800"}}')
    assert "a key of 'filter' must not contain a NUL character" in message
    assert "'filter.k\\x00' must not contain an unpaired surrogate" in message
    message.encode("utf-8")  # the message itself is always sendable


# 8. One message, every problem, short echoes.


def test_all_problems_in_one_message_with_clipped_echoes() -> None:
    message = refuse(json.dumps({"limit": "ten", "status": "x" * 5_000, "bogus": 1}))
    assert message.startswith(
        "Invalid arguments for tool \"get_order\": unknown argument 'bogus'; "
        "'order_id' is required; 'limit' must be an integer (got string \"ten\"); "
    )
    echo = re.search(r'\(got string "(x+…)"\)', message)
    assert echo is not None and len(echo.group(1)) == 80
    assert "x" * 81 not in message


def test_problem_list_is_capped() -> None:
    message = refuse(json.dumps({"order_id": "a", "sizes": ["n"] * 25}))
    assert "'sizes[9]'" in message and "'sizes[10]'" not in message
    assert message.count("must be an integer") == 10
    assert "; and 15 more problems." in message


def test_argument_error_is_a_refusal() -> None:
    with pytest.raises(ExecutionRefused):
        parse_arguments("[", PARAMS, tool=TOOL)


# 9. The result.


def test_result_is_a_new_dict_with_values_unchanged() -> None:
    given_args = {"order_id": "a", "filter": {"nested": [1, 2]}, "tags": ["x"], "limit": None}
    result = ok(given_args)
    assert result == {"order_id": "a", "filter": {"nested": [1, 2]}, "tags": ["x"]}
    assert result is not given_args and result["filter"] is given_args["filter"]


# Properties.

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
SCALARS: list[ParamType] = ["string", "integer", "number", "boolean"]


def values_for(param: Parameter) -> st.SearchStrategy[Any]:
    """Values that fit ``param``."""
    if param.enum is not None:
        return st.sampled_from(param.enum)
    if param.type == "array":
        return st.lists(values_for(param.items or Parameter()), max_size=4)
    return {
        "string": TEXT.filter(str.strip) if param.required else TEXT,
        "integer": st.integers(),
        "number": st.integers() | st.floats(allow_nan=False, allow_infinity=False),
        "boolean": st.booleans(),
        "object": st.dictionaries(TEXT, JSON_VALUES, max_size=3),
    }[param.type]


@st.composite
def parameters(draw: st.DrawFn) -> Parameter:
    kind: ParamType = draw(st.sampled_from([*SCALARS, "array", "object"]))
    required = draw(st.booleans())
    if kind == "array":
        items = draw(st.none() | st.sampled_from(SCALARS).map(lambda t: Parameter(type=t)))
        return Parameter(type="array", items=items, required=required)
    enum = None
    if kind in SCALARS and draw(st.booleans()):
        enum = draw(st.lists(values_for(Parameter(type=kind, required=True)), min_size=1))
    return Parameter(type=kind, enum=enum, required=required)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def count(value: Any) -> int:
    if isinstance(value, list):
        return len(value) + sum(map(count, value))
    if isinstance(value, dict):
        return len(value) + sum(map(count, value.values()))
    return 0


@given(st.dictionaries(NAMES, parameters(), max_size=6), st.data())
def test_matching_arguments_round_trip(params: dict[str, Parameter], data: st.DataObject) -> None:
    args = data.draw(
        st.fixed_dictionaries(
            {n: values_for(p) for n, p in params.items() if p.required},
            optional={n: values_for(p) for n, p in params.items() if not p.required},
        )
    )
    assume(depth(args) <= DEFAULT_LIMITS.max_depth and count(args) <= DEFAULT_LIMITS.max_items)
    assert parse_arguments(json.dumps(args), params, tool=TOOL) == args
    assert parse_arguments(args, params, tool=TOOL) == args


JSONISH = st.text(alphabet='{}[]":,.-+0123456789eE \\ntrufalsNIyu\x00é', max_size=60)
OBJECTS = st.dictionaries(st.sampled_from([*PARAMS, "other"]), JSON_VALUES).map(json.dumps)


@given(st.one_of(st.text(), JSONISH, OBJECTS, JSON_VALUES.map(json.dumps)))
def test_arbitrary_text_is_parsed_or_refused(raw: str) -> None:
    try:
        result = parse_arguments(raw, PARAMS, tool=TOOL)
    except ArgumentError as e:
        assert str(e).startswith(f'Invalid arguments for tool "{TOOL}": ')
        return
    assert set(result) <= set(PARAMS) and None not in result.values()
    assert result["order_id"].strip()


NESTINGS = st.lists(st.sampled_from([("[", "]"), ('{"k": ', "}"), ('["x", ', "]")]), min_size=1)
LEVELS = st.integers(min_value=17, max_value=100_000)


@settings(deadline=timedelta(seconds=1), max_examples=50)
@given(LEVELS, NESTINGS, st.booleans(), st.booleans())
def test_deep_nesting_is_refused_quickly(
    levels: int, nestings: list[tuple[str, str]], wrapped: bool, closed: bool
) -> None:
    pairs = [nestings[i % len(nestings)] for i in range(levels)]
    body = "".join(o for o, _ in pairs)
    if closed:
        body += "1" + "".join(c for _, c in reversed(pairs))
    raw = '{"order_id": "a", "filter": {"k": ' + body + "}}" if wrapped else body
    message = refuse(raw, limits=ArgumentLimits(max_bytes=10_000_000))
    if (wrapped and closed) or levels > 16 + 32:  # else it may fail for another reason first
        assert "nested too deeply (more than 16 levels" in message
    refuse(raw)  # and with the default limits, too large or too deep
