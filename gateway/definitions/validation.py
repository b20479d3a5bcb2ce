"""Save-time checks of action definitions beyond their shape.

Every problem is a :class:`~gateway.errors.DefinitionError` naming the action, the field and the
reason. Messages quote variable names and header names, never literal values, so a secret
written into a definition by mistake is not echoed back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import jmespath
import jmespath.exceptions

from gateway.definitions.actions import (
    Action,
    ApiKeyAuth,
    ButtonAction,
    FormAction,
    HeadersAuth,
    HttpAction,
    HttpClick,
    HttpRequest,
    NavigateClick,
    OAuth2ClientCredentials,
)
from gateway.definitions.templating import TemplateProblem, analyze, split_url
from gateway.errors import DefinitionError

__all__ = ["FORBIDDEN_HEADERS", "TOOL_NAME_PATTERN", "validate_action", "validate_actions"]

TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAPS_TO = re.compile(r"^lead\.[A-Za-z_][A-Za-z0-9_]{0,63}$")
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
    }
)


def _templates(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Yield ``(field path, template)`` for every string inside a JSON value."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from _templates(key, f"{path}.{key}")
            yield from _templates(child, f"{path}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _templates(child, f"{path}[{i}]")


class _Checker:
    """Collects the rules for one action; ``fail`` raises the first problem."""

    def __init__(self, action: Action) -> None:
        self.action = action
        self.name = action.name
        self.args: set[str] = set()
        self.form: set[str] = set()
        if isinstance(action, HttpAction):
            self.args = set(action.parameters)
        if isinstance(action, FormAction):
            self.form = {f.name for f in action.fields}

    def fail(self, field: str, reason: str) -> None:
        raise DefinitionError(self.name, field, reason)

    def template(self, field: str, source: str, *, allow_form: bool = False) -> set[str]:
        try:
            variables = analyze(source).variables
        except TemplateProblem as e:
            self.fail(field, str(e))
            raise AssertionError from e  # unreachable: fail() raises
        for var in variables:
            namespace, _, key = var.partition(".")
            if namespace == "args" and key not in self.args:
                declared = ", ".join(sorted(self.args)) or "none"
                self.fail(
                    field, f"{{{{ {var} }}}} is not a declared parameter (declared: {declared})"
                )
            if namespace == "form":
                if not allow_form:
                    self.fail(
                        field, f"{{{{ {var} }}}} is only available in a form's submit request"
                    )
                if key not in self.form:
                    self.fail(field, f"{{{{ {var} }}}} is not a field of this form")
        return set(variables)

    def url(self, field: str, source: str, *, allow_form: bool = False) -> None:
        try:
            scheme, authority, *_ = split_url(source)
        except ValueError as e:
            self.fail(field, str(e))
            return
        if "{" in scheme or "{" in authority:
            self.fail(field, "variables may not appear in the URL's scheme, host or port")
        if scheme.lower() not in {"http", "https"}:
            self.fail(field, f"scheme {scheme!r} is not allowed (use http or https)")
        if not authority or "@" in authority:
            self.fail(field, "the URL needs a host and may not carry credentials (use auth)")
        self.template(field, source, allow_form=allow_form)

    def header_name(self, field: str, name: str) -> None:
        if not _HEADER_NAME.match(name):
            self.fail(field, f"invalid header name {name!r}")
        if name.lower() in FORBIDDEN_HEADERS or name.lower().startswith("proxy-"):
            self.fail(field, f"header {name!r} is set by the gateway and may not be defined")

    def request(self, prefix: str, req: HttpRequest, *, allow_form: bool = False) -> None:
        self.url(f"{prefix}url", req.url, allow_form=allow_form)
        for name, value in req.headers.items():
            self.header_name(f"{prefix}headers.{name}", name)
            self.template(f"{prefix}headers.{name}", value, allow_form=allow_form)
        for key, value in req.query.items():
            self.template(f"{prefix}query.{key}", value, allow_form=allow_form)
        for path, source in _templates(req.body, f"{prefix}body"):
            self.template(path, source, allow_form=allow_form)
        self.auth(prefix, req)
        if req.response.select:
            try:
                jmespath.compile(req.response.select)
            except jmespath.exceptions.JMESPathError as e:
                self.fail(f"{prefix}response.select", f"invalid JMESPath expression: {e}")
        for i, path in enumerate(req.response.redact):
            if not path.strip() or path.startswith(".") or ".." in path:
                self.fail(f"{prefix}response.redact[{i}]", "expected a dotted field path")

    def auth(self, prefix: str, req: HttpRequest) -> None:
        auth = req.auth
        if auth is None:
            return
        field = f"{prefix}auth"
        for key, value in auth.model_dump(exclude={"type", "headers"}).items():
            if isinstance(value, str):
                self.template(f"{field}.{key}", value)
        if isinstance(auth, ApiKeyAuth) and auth.in_ == "header":
            self.header_name(f"{field}.name", auth.name)
        if isinstance(auth, HeadersAuth):
            for name, value in auth.headers.items():
                self.header_name(f"{field}.headers.{name}", name)
                self.template(f"{field}.headers.{name}", value)
        if isinstance(auth, OAuth2ClientCredentials):
            self.url(f"{field}.token_url", auth.token_url)

    def run(self) -> None:
        action = self.action
        if not TOOL_NAME_PATTERN.match(action.tool_name):
            self.fail("tool_name", "must match ^[a-zA-Z0-9_-]{1,64}$")
        if isinstance(action, HttpAction):
            for pname in action.parameters:
                if not _PARAM_NAME.match(pname):
                    self.fail(f"parameters.{pname}", "parameter names must be identifiers")
            self.request("", action)
        elif isinstance(action, FormAction):
            for i, f in enumerate(action.fields):
                where = f"fields[{i}]"
                if f.maps_to is not None and not _MAPS_TO.match(f.maps_to):
                    self.fail(f"{where}.maps_to", f"unknown target {f.maps_to!r} (use lead.NAME)")
                if f.type == "select" and not f.options:
                    self.fail(f"{where}.options", "a select field needs options")
                if f.pattern is not None:
                    try:
                        re.compile(f.pattern)
                    except re.error as e:
                        self.fail(f"{where}.pattern", f"invalid regular expression: {e}")
            if len(self.form) != len(action.fields):
                self.fail("fields", "field names must be unique")
            if action.submit is not None:
                self.request("submit.", action.submit, allow_form=True)
        elif isinstance(action, ButtonAction):
            click = action.on_click
            if isinstance(click, NavigateClick):
                self.url("on_click.navigate", click.navigate)
            elif isinstance(click, HttpClick):
                self.request("on_click.http.", click.http)


def validate_action(action: Action) -> None:
    """Check one action's templates, URLs, headers and trimming rules.

    Raises:
        DefinitionError: naming the action, the field and the reason.
    """
    _Checker(action).run()


def validate_actions(actions: Iterable[Action]) -> None:
    """Check every action and that tool names are unique in the workspace."""
    seen: dict[str, str] = {}
    for action in actions:
        validate_action(action)
        key = action.tool_name.lower()
        if key in seen:
            raise DefinitionError(
                action.name,
                "tool_name",
                f"duplicate tool name {action.tool_name!r} (also used by {seen[key]!r})",
            )
        seen[key] = action.name
