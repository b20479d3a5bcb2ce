"""Strict parsing of the arguments a model supplies with a tool call.

Arguments arrive as the JSON text of OpenAI's ``function.arguments`` or, from MCP clients and
tests, as an already-parsed mapping. :func:`parse_arguments` checks them against an action's
``parameters`` before anything is sent, and refuses with a single
:class:`~gateway.errors.ArgumentError` whose message lists every problem in words the model can
act on, followed by the accepted arguments.

Choices worth knowing:

- An ``integer`` must be a JSON integer: ``5.0`` is refused rather than converted, because values
  pass through unchanged and an integral float usually means the model misread the schema.
- A required argument given as ``null`` or a blank string counts as missing; an optional one given
  as ``null`` is dropped. Empty arrays and objects are values, not missing.
- The limits (:class:`ArgumentLimits`) cover the whole document, including the free-form contents
  of ``object`` parameters. Text nested far beyond the limit is refused before ``json.loads``
  recurses into it, so hostile input cannot raise ``RecursionError`` or take more than linear
  time; text slightly too deep is parsed, so the refusal can name the field.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, NoReturn

from gateway.definitions.actions import Parameter
from gateway.errors import ArgumentError

__all__ = ["DEFAULT_LIMITS", "ArgumentLimits", "parse_arguments"]


@dataclass(frozen=True, slots=True)
class ArgumentLimits:
    """Caps that keep a hostile or confused model from costing memory, time or stack."""

    max_bytes: int = 64 * 1024
    """Largest raw JSON text accepted, counted in UTF-8 bytes."""
    max_depth: int = 16
    """Deepest nesting of arrays and objects; the arguments object itself is level 1."""
    max_items: int = 1000
    """Most keys plus array items in the whole document."""
    max_string_chars: int = 10_000
    """Longest string (value or key) accepted."""


DEFAULT_LIMITS = ArgumentLimits()

_ECHO_CHARS = 80  # never show the model more than this much of an offending value
_MAX_PROBLEMS = 10
_DEPTH_MARGIN = 32
_STRING_PARAM = Parameter()
_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {  # words for messages, and the test
    "string": ("a string", lambda v: isinstance(v, str)),
    "integer": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a finite number", lambda v: _is_number(v)),
    "boolean": ("a boolean (true or false)", lambda v: isinstance(v, bool)),
    "array": ("an array", lambda v: isinstance(v, list)),
    "object": ("an object", lambda v: isinstance(v, Mapping)),
}
# A JSON string, or an unterminated one running to the end; possessive, so always linear time.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\[\s\S]?)*+(?:"|\Z)')
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_BAD_CHAR = re.compile(r"[\x00\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Refused(Exception):
    """A problem that makes the rest of the arguments unreadable (also raised from JSON hooks)."""


def parse_arguments(
    raw: str | Mapping[str, Any] | None,
    parameters: Mapping[str, Parameter],
    *,
    tool: str,
    limits: ArgumentLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Check a tool call's arguments against the action's parameters.

    Args:
        raw: The model's JSON text, an already-parsed mapping, or ``None`` (blank means none).
        parameters: The action's declared parameters, by name.
        tool: The tool name, for the refusal message.
        limits: Size, depth and count caps.

    Returns:
        A new dict of the declared arguments (optional ``null`` ones dropped), values unchanged.

    Raises:
        ArgumentError: Naming every problem found, phrased for the model.
    """
    checker = _Checker(limits)
    result: dict[str, Any] = {}
    try:
        result = checker.check(_load(raw, limits), parameters)
    except _Refused as e:
        checker.problems, checker.hidden = [str(e)], 0
    if not checker.problems:
        return result
    problems = "; ".join(checker.problems)
    if checker.hidden:
        problems += f"; and {checker.hidden} more problem{'s' if checker.hidden > 1 else ''}"
    if parameters:
        accepted = ", ".join(_signature(name, p) for name, p in parameters.items())
        tail = f"Accepted arguments: {accepted}."
    else:
        tail = "This tool takes no arguments."
    raise ArgumentError(f'Invalid arguments for tool "{_clip(tool)}": {problems}. {tail}')


def _load(raw: object, limits: ArgumentLimits) -> Mapping[str, Any]:
    """Turn ``raw`` into a mapping, refusing anything over the limits or not strict JSON."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return raw
    if not isinstance(raw, str):
        raise _Refused(f"the arguments must be a JSON object (got {_describe(raw)})")
    size = len(raw)
    if size <= limits.max_bytes < size * 4:  # 1 to 4 UTF-8 bytes a character: only then measure
        size = len(raw.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise _Refused(f"the arguments are too large (more than {limits.max_bytes:,} bytes)")
    if not raw or raw.isspace():
        return {}
    too_deep = f"the arguments are nested too deeply (more than {limits.max_depth} levels)"
    # Refuse hostile nesting before json.loads recurses into it (most calls skip the scan); a
    # little over the limit is parsed, so that the walk can name the field that is too deep.
    parse_depth = limits.max_depth + _DEPTH_MARGIN
    if raw.count("[") + raw.count("{") > parse_depth and _max_depth(raw) > parse_depth:
        raise _Refused(too_deep)
    try:
        value = json.loads(raw, object_pairs_hook=_unique_object, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        raise _Refused(f"the arguments are not valid JSON: {e.msg} ({where})") from None
    except ValueError:  # Python's cap on integer digits
        raise _Refused("the arguments contain a number with too many digits") from None
    except RecursionError:  # only if the caller's own stack is already nearly exhausted
        raise _Refused(too_deep) from None
    if not isinstance(value, dict):
        raise _Refused(f"the arguments must be a JSON object (got {_describe(value)})")
    return value


def _max_depth(text: str) -> int:
    """The deepest bracket nesting in ``text``, ignoring brackets inside strings."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses duplicate keys instead of keeping the last one."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        key = next(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
        raise _Refused(f"the key {_quote(key)} appears more than once")
    return obj


def _refuse_constant(name: str) -> NoReturn:
    """``parse_constant`` hook: ``NaN`` and ``Infinity`` are JavaScript, not JSON."""
    raise _Refused(f"{name} is not valid JSON; use a finite number or null")


class _Checker:
    """One pass over the arguments, collecting problems and counting keys and items."""

    def __init__(self, limits: ArgumentLimits) -> None:
        self.limits = limits
        self.problems: list[str] = []
        self.hidden = 0
        self.items = 0

    def add(self, problem: str) -> None:
        """Record a problem; past a few, only count them so the message stays readable."""
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.hidden += 1

    def check(self, args: Mapping[str, Any], parameters: Mapping[str, Parameter]) -> dict[str, Any]:
        """Check the top-level object; return the accepted arguments."""
        self.enter(args, 1, "arguments")
        unknown = [_quote(str(key)) for key in args if key not in parameters]
        if unknown:
            shown = ", ".join(unknown[:_MAX_PROBLEMS])
            if len(unknown) > _MAX_PROBLEMS:
                shown += f" and {len(unknown) - _MAX_PROBLEMS} more"
            self.add(f"unknown argument{'s' if len(unknown) > 1 else ''} {shown}")
        result: dict[str, Any] = {}
        for name, param in parameters.items():
            value = args.get(name)
            if value is None or (param.required and isinstance(value, str) and not value.strip()):
                if param.required:
                    got = "" if name not in args else f" (got {_describe(value)})"
                    self.add(f"{_quote(name)} is required{got}")
                continue
            self.check_value(value, param, name, 2)
            result[name] = value
        return result

    def enter(self, container: list[Any] | Mapping[Any, Any], depth: int, path: str) -> bool:
        """Account for a container's entries; False (with a problem) if it is too deep to read."""
        if depth > self.limits.max_depth:
            limit = self.limits.max_depth
            self.add(f"{_quote(path)} is nested too deeply (more than {limit} levels in all)")
            return False
        self.items += len(container)
        if self.items > self.limits.max_items:
            limit = self.limits.max_items
            raise _Refused(f"the arguments hold too many keys and items (more than {limit:,})")
        return True

    def check_value(self, value: Any, param: Parameter | None, path: str, depth: int) -> None:
        """Check one value against its parameter, or as free-form JSON when ``param`` is None."""
        if param is not None:
            words, test = _TYPES[param.type]
            if not test(value):
                self.add(f"{_quote(path)} must be {words} (got {_describe(value)})")
                return
        if isinstance(value, list):
            items = None if param is None else param.items or _STRING_PARAM
            if self.enter(value, depth, path):
                for i, item in enumerate(value):
                    self.check_value(item, items, f"{path}[{i}]", depth + 1)
        elif isinstance(value, Mapping):
            fields = None if param is None else param.properties
            if self.enter(value, depth, path):
                for key, item in value.items():
                    if not isinstance(key, str):
                        self.add(f"{_quote(path)} has a key that is not a string")
                        continue
                    self.check_string(key, f"a key of {_quote(path)}")
                    # A declared field is checked as declared; others as free-form JSON.
                    known = None if fields is None else fields.get(key)
                    if item is None and known is not None and not known.required:
                        continue  # an optional field sent as null: the API's to read
                    self.check_value(item, known, f"{path}.{key}", depth + 1)
                for key, field in (fields or {}).items():
                    if field.required and value.get(key) is None:
                        self.add(f"{_quote(f'{path}.{key}')} is required")
        elif isinstance(value, str):
            self.check_string(value, _quote(path))
        elif not (value is None or isinstance(value, bool) or _is_number(value)):
            self.add(f"{_quote(path)} must be a JSON value (got {_describe(value)})")
        enum = None if param is None else param.enum
        if enum is not None and not any(_same(value, option) for option in enum):
            options = ", ".join(_clip(json.dumps(option)) for option in enum[:20])
            more = ", ..." if len(enum) > 20 else ""
            self.add(f"{_quote(path)} must be one of {options}{more} (got {_describe(value)})")

    def check_string(self, value: str, label: str) -> None:
        """Refuse overlong strings and characters no request could carry safely."""
        limit = self.limits.max_string_chars
        if len(value) > limit:
            self.add(f"{label} is too long ({len(value):,} characters; at most {limit:,})")
        bad = _BAD_CHAR.search(value)
        if bad:
            what = "a NUL character" if bad.group() == "\x00" else "an unpaired surrogate"
            self.add(f"{label} must not contain {what}")


def _is_number(value: Any) -> bool:
    """A JSON number: an int (not a bool) or a finite float."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _same(value: Any, option: str | int | float | bool) -> bool:
    """Enum membership without Python's ``True == 1``."""
    return bool(value == option) and isinstance(value, bool) is isinstance(option, bool)


def _signature(name: str, param: Parameter) -> str:
    """``name (type[, required])`` for the list of accepted arguments."""
    items = f" of {(param.items or _STRING_PARAM).type}" if param.type == "array" else ""
    return f"{name} ({param.type}{items}{', required' if param.required else ''})"


def _describe(value: object) -> str:
    """A short, safe description of an offending value: its JSON type and a clipped echo."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, str):
        return (
            f"string {json.dumps(_clip(value), ensure_ascii=False)}" if value else "an empty string"
        )
    if isinstance(value, int) and value.bit_length() > 512:  # Python caps printing huge ints
        return "a number with too many digits to show"
    if isinstance(value, int | float):
        return f"number {_clip(repr(value))}"
    if isinstance(value, list):
        return f"an array of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, Mapping):
        return "an object"
    return _clip(type(value).__name__)


def _clip(text: str) -> str:
    """At most ``_ECHO_CHARS`` of ``text`` (a cut marked), control characters and unpaired
    surrogates escaped so the message stays readable and encodable."""
    text = text if len(text) <= _ECHO_CHARS else text[: _ECHO_CHARS - 1] + "…"
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _quote(path: str) -> str:
    """A field name or path as shown in messages."""
    return f"'{_clip(path)}'"
