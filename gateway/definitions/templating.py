"""Sandboxed templates with escaping by where a value lands.

Templates use Jinja2 syntax but only a small, safe subset of it: ``{{ namespace.name }}`` with a
few string filters. Anything else (calls, loops, attribute chains on values, ``{% ... %}`` blocks)
is refused when an action is saved, and rendering still runs in Jinja2's sandbox.

Every variable is escaped for its landing place through Jinja2's ``finalize`` hook, which applies
to expression output only, never to the operator's literal text:

- ``path``:   one URL path segment, percent-encoded with no safe characters; ``.`` and ``..``
  are refused, so a value can never climb or split the path;
- ``query``:  one query-string key or value, percent-encoded;
- ``header``: a header value; control characters (CR, LF, NUL, ...), Unicode line separators and
  values over 8 KiB are refused before any request is built;
- ``raw``:    plain text, for JSON string leaves (the body is built as data and serialised once)
  and values the gateway encodes itself.

A value is inserted once; the output of a render is never rendered again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote

from jinja2 import StrictUndefined, nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from gateway.errors import ExecutionRefused, HeaderValueError

__all__ = [
    "NAMESPACES",
    "Escape",
    "TemplateInfo",
    "TemplateProblem",
    "analyze",
    "is_empty",
    "lookup",
    "mask_tags",
    "render",
    "split_outside_tags",
    "split_url",
    "to_text",
]

Escape = Literal["path", "query", "header", "raw"]

# None means "any field name" (captured lead fields, declared args/form fields, named secrets).
NAMESPACES: dict[str, frozenset[str] | None] = {
    "conversation": frozenset({"id", "user_id", "channel"}),
    "message": frozenset({"content", "sentiment"}),
    "lead": None,
    "agent": frozenset({"id"}),
    "args": None,
    "form": None,
    "secrets": None,
}

ALLOWED_FILTERS = frozenset(
    {"default", "d", "lower", "upper", "trim", "title", "capitalize", "truncate", "string"}
)
MAX_HEADER_VALUE = 8192
_HEADER_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


class TemplateProblem(ValueError):
    """A template is not acceptable; the message says why (without echoing literal text)."""


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """What a template refers to."""

    source: str
    variables: frozenset[str]
    """Dotted names, e.g. ``lead.email``."""
    single: str | None
    """The variable's name when the template is exactly ``{{ ns.name }}`` with no filter."""
    pieces: tuple[tuple[bool, str], ...] | None = None
    """Text and variables in order, ``(is_variable, text or dotted name)``, when the template
    is only those (no filter, no literal in braces): rendered without Jinja2."""

    @property
    def is_static(self) -> bool:
        """True when the template has no variables (no rendering needed)."""
        return not self.variables


def _dotted(node: nodes.Node) -> str:
    """Turn ``lead.email`` / ``lead['email']`` into a dotted name, or explain why not."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            if not isinstance(node.arg.value, str):
                raise TemplateProblem("only names may be used as keys, e.g. lead['email']")
            parts.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            break
        else:
            raise TemplateProblem(
                f"unsupported template construct {type(node).__name__}; "
                "use {{ namespace.name }} with simple filters only"
            )
    parts.reverse()
    namespace = parts[0]
    if namespace not in NAMESPACES:
        known = ", ".join(sorted(NAMESPACES))
        raise TemplateProblem(f"unknown variable namespace {namespace!r} (known: {known})")
    if len(parts) != 2:
        raise TemplateProblem(
            f"variable {'.'.join(parts)!r} must name exactly one field, e.g. {namespace}.name"
        )
    fields = NAMESPACES[namespace]
    if fields is not None and parts[1] not in fields:
        raise TemplateProblem(
            f"unknown variable {'.'.join(parts)!r} (known: "
            + ", ".join(f"{namespace}.{f}" for f in sorted(fields))
            + ")"
        )
    return ".".join(parts)


def _expression(node: nodes.Node, found: set[str]) -> None:
    if isinstance(node, nodes.Filter):
        if node.name not in ALLOWED_FILTERS:
            raise TemplateProblem(f"filter {node.name!r} is not allowed")
        if node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise TemplateProblem(f"filter {node.name!r} may only take literal arguments")
        if not all(isinstance(a, nodes.Const) for a in node.args):
            raise TemplateProblem(f"filter {node.name!r} may only take literal arguments")
        if node.node is None:
            raise TemplateProblem("a filter needs a value")
        _expression(node.node, found)
    elif isinstance(node, nodes.Const):
        return
    else:
        found.add(_dotted(node))


@lru_cache(maxsize=8192)
def analyze(source: str) -> TemplateInfo:
    """Parse a template and list its variables, refusing anything outside the safe subset.

    Raises:
        TemplateProblem: the template is malformed or uses a construct that is not allowed.
    """
    if "{" not in source:
        return TemplateInfo(source, frozenset(), None)
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as e:
        raise TemplateProblem(f"template syntax error: {e.message}") from e
    found: set[str] = set()
    pieces: list[tuple[bool, str]] | None = []
    for stmt in tree.body:
        if not isinstance(stmt, nodes.Output):
            raise TemplateProblem(
                f"'{{% {type(stmt).__name__.lower()} %}}' blocks are not allowed; "
                "use {{ namespace.name }} only"
            )
        for child in stmt.nodes:
            if isinstance(child, nodes.TemplateData):
                # The lexer has applied whitespace control ({{- -}}) to this text already.
                if pieces is not None:
                    pieces.append((False, child.data))
                continue
            if isinstance(child, nodes.Filter | nodes.Const):
                _expression(child, found)
                pieces = None
            else:
                name = _dotted(child)
                found.add(name)
                if pieces is not None:
                    pieces.append((True, name))
    if pieces is None:
        return TemplateInfo(source, frozenset(found), None)
    only = pieces[0] if len(pieces) == 1 else None
    single = only[1] if only is not None and only[0] else None
    return TemplateInfo(source, frozenset(found), single, tuple(pieces))


# --- values ---------------------------------------------------------------------------------


def lookup(values: Mapping[str, Any], dotted: str) -> Any:
    """Return the value of a dotted name (``None`` when absent)."""
    namespace, _, name = dotted.partition(".")
    scope = values.get(namespace)
    if not isinstance(scope, Mapping):
        return None
    return scope.get(name)


def is_empty(value: Any) -> bool:
    """Empty means missing: ``None``, blank strings and empty lists/objects."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | dict | tuple):
        return len(value) == 0
    return False


def to_text(value: Any) -> str:
    """Turn a value into the text a template inserts (JSON for lists, objects and booleans)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool | list | dict | tuple):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


# --- escaping -------------------------------------------------------------------------------


def _escape_path(value: Any) -> str:
    text = to_text(value)
    if text in {".", ".."}:
        raise ExecutionRefused(f"the value {text!r} cannot be used in a URL path")
    return quote(text, safe="")


def _escape_query(value: Any) -> str:
    return quote(to_text(value), safe="")


def _escape_header(value: Any) -> str:
    text = to_text(value)
    if len(text) > MAX_HEADER_VALUE:
        raise HeaderValueError("?", f"value longer than {MAX_HEADER_VALUE} characters")
    if _HEADER_FORBIDDEN.search(text):
        raise HeaderValueError("?", "value contains control or line-break characters")
    return text


_ESCAPERS: dict[Escape, Callable[[Any], str]] = {
    "path": _escape_path,
    "query": _escape_query,
    "header": _escape_header,
    "raw": to_text,
}


class _ItemFirstEnvironment(SandboxedEnvironment):
    """``{{ args.items }}`` means the argument named ``items``, never the dict method."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def _environment(finalize: Callable[[Any], str] | None = None) -> SandboxedEnvironment:
    return _ItemFirstEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=finalize,
        cache_size=0,
    )


_ENV = _environment()
_RENDER_ENVS = {escape: _environment(fn) for escape, fn in _ESCAPERS.items()}


@lru_cache(maxsize=8192)
def _compiled(source: str, escape: Escape) -> Any:
    template = _RENDER_ENVS[escape].from_string(source)
    # Jinja copies a template's globals into every render's context; as its ChainMap over the
    # environment's globals (which never change here) that copy walked both maps in Python.
    template.globals = dict(template.globals)
    return template


def render(source: str, values: Mapping[str, Any], escape: Escape) -> str:
    """Render ``source`` with every variable escaped for ``escape``.

    The caller has checked that every variable is present (see :func:`analyze`).
    """
    info = analyze(source)
    if info.is_static:
        return source
    if info.pieces is not None:
        # Text and plain variables (``{{ lead.email }}``, ``/orders/{{ args.id }}``): what
        # Jinja2 renders, each variable through the same escaper as its ``finalize``.
        escaper = _ESCAPERS[escape]
        return "".join(
            escaper(lookup(values, text)) if variable else text for variable, text in info.pieces
        )
    return str(_compiled(source, escape).render(values))


# --- URL templates ------------------------------------------------------------------------

_URL_HEAD = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)$", re.S
)
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def mask_tags(text: str, replacement: str) -> str:
    """``text`` with every ``{{ ... }}`` (and block or comment tag) replaced by ``replacement``.

    Used to check what the operator wrote around the variables (a JSON body, a URL's literal
    characters) without rendering it.
    """
    return _TAG.sub(replacement, text)


def split_outside_tags(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on ``sep`` where it does not stand inside ``{{ ... }}``."""
    masked = _TAG.sub(lambda m: "\0" * len(m.group()), text)
    parts: list[str] = []
    start = 0
    for m in re.finditer(re.escape(sep), masked):
        if maxsplit >= 0 and len(parts) == maxsplit:
            break
        parts.append(text[start : m.start()])
        start = m.end()
    parts.append(text[start:])
    return parts


@lru_cache(maxsize=4096)
def split_url(url: str) -> tuple[str, str, str, str, str]:
    """Split a URL template into ``(scheme, authority, path, query, fragment)`` without rendering.

    Raises:
        ValueError: the URL has no ``scheme://authority`` head.
    """
    m = _URL_HEAD.match(url.strip())
    if not m:
        raise ValueError("must be an absolute URL such as https://api.example.com/path")
    rest = m.group("rest")
    rest, *frag = split_outside_tags(rest, "#", 1)
    path, *query = split_outside_tags(rest, "?", 1)
    return (
        m.group("scheme"),
        m.group("authority"),
        path,
        query[0] if query else "",
        (frag[0] if frag else ""),
    )
