"""Save-time checks of action definitions beyond their shape.

Every problem is a :class:`~gateway.errors.DefinitionError` naming the action, the field and the
reason. Messages quote variable names, header names and hosts, never other literal values, so a
secret written into a definition by mistake is not echoed back.

Two checks depend on the running configuration, so callers pass what they know: ``secrets`` (the
names defined in the config's ``secrets:`` and, where there is one, the secret store) refuses a
reference to an undefined secret, and ``destinations`` (the egress policy's
``save_time_refusal``) refuses a URL whose fixed host or port the policy will block.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from functools import lru_cache
from ipaddress import IPv6Address
from typing import Any, Protocol, cast

import jmespath
import jmespath.exceptions
import re2

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
    OAuth2RefreshToken,
    Parameter,
)
from gateway.definitions.templating import TemplateProblem, analyze, mask_tags, split_url
from gateway.errors import DefinitionError

__all__ = [
    "FORBIDDEN_HEADERS",
    "TOOL_NAME_PATTERN",
    "DestinationCheck",
    "FormPattern",
    "check_secrets",
    "compile_pattern",
    "secret_references",
    "split_authority",
    "template_variables",
    "validate_action",
    "validate_actions",
]

DestinationCheck = Callable[[str, int], str | None]
"""``(host, port)`` of a URL to why every request there will be refused, or None."""

TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAPS_TO = re.compile(r"^lead\.[A-Za-z_][A-Za-z0-9_]{0,63}$")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_URL_CHAR = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SAMPLE_VAR = re.compile(r"^(lead|conversation|message|agent)\.[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ARG_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "integer": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": (
        "a number",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    ),
    "boolean": ("true or false", lambda v: isinstance(v, bool)),
    "array": ("an array", lambda v: isinstance(v, list)),
    "object": ("an object", lambda v: isinstance(v, dict)),
}
_JSON_TYPES = ("application/json", "+json")
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


class FormPattern(Protocol):
    """A compiled form-field pattern (an RE2 regular expression)."""

    def fullmatch(self, text: str) -> object | None:
        """A match object when the whole of ``text`` matches, else None."""
        ...


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> FormPattern:
    """Compile a form field's ``pattern`` with RE2, whose matching time is linear in the input.

    Operators write these patterns and customers fill the fields (up to 10,000 characters): a
    backtracking engine could spend minutes on ``(a+)+$``, RE2 cannot.

    Raises:
        ValueError: RE2 cannot compile the pattern (backreferences and lookaround are not
            supported, nor are some escapes such as ``\\Z``).
    """
    options = re2.Options()
    options.log_errors = False  # the caller reports the problem; RE2 would also print it
    try:
        return cast(FormPattern, re2.compile(pattern, options))
    except re2.error as e:
        why = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else e
        raise ValueError(
            f"not supported by the linear-time regex engine (RE2): {why} "
            "(backreferences and lookaround are not available)"
        ) from None


def split_authority(authority: str) -> tuple[str, int | None]:
    """Split a URL's fixed authority into its host (IPv6 in brackets) and port, if any.

    Raises:
        ValueError: the host is not a host name, IPv4 or bracketed IPv6 address, or the port is
            not a number up to 65535.
    """
    if authority.startswith("["):
        inside, bracket, rest = authority[1:].partition("]")
        try:
            IPv6Address(inside.replace("%25", "%", 1))
        except ValueError:
            raise ValueError(f"the host [{inside}] is not a valid IPv6 address") from None
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("write an IPv6 host with a port as [address]:port")
        host, port_text = f"[{inside}]", rest[1:] if rest else None
    else:
        host, colon, port = authority.partition(":")
        port_text = port if colon else None
        labels = (host[:-1] if host.endswith(".") else host).split(".")
        if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise ValueError(
                f"the host {host!r} is not a valid host name or IP address (letters, digits, "
                "'-', '_' and '.' only; write IDNs in their xn-- form)"
            )
    if port_text is None:
        return host, None
    # Port 0 parses (a placeholder the demo rewrites); the egress port list still applies to it.
    if not (port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535):
        raise ValueError("the port must be a number from 0 to 65535")
    return host, int(port_text)


def _url_text_problem(rest: str) -> str | None:
    """Why the literal text after a URL's authority cannot be sent as it is, if it cannot."""
    masked = mask_tags(rest, "x")
    for char in masked:
        if not _URL_CHAR.fullmatch(char):
            what = "a space" if char == " " else f"the character U+{ord(char):04X}"
            return f"the URL contains {what}, which must be percent-encoded"
    if _BAD_PERCENT.search(masked):
        return "the URL contains a '%' that does not start a percent-encoded byte (%XX)"
    return None


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


def _auth_templates(prefix: str, req: HttpRequest) -> Iterator[tuple[str, str]]:
    auth = req.auth
    if auth is None:
        return
    for key, value in auth.model_dump(exclude={"type", "headers"}).items():
        if isinstance(value, str):
            yield f"{prefix}auth.{key}", value
    if isinstance(auth, HeadersAuth):
        for name, value in auth.headers.items():
            yield f"{prefix}auth.headers.{name}", value


def _request_templates(prefix: str, req: HttpRequest) -> Iterator[tuple[str, str]]:
    yield f"{prefix}url", req.url
    for name, value in req.headers.items():
        yield f"{prefix}headers.{name}", value
    for key, value in req.query.items():
        yield f"{prefix}query.{key}", value
    yield from _templates(req.body, f"{prefix}body")
    yield from _auth_templates(prefix, req)


def _action_templates(action: Action) -> Iterator[tuple[str, str]]:
    if isinstance(action, HttpAction):
        yield from _request_templates("", action)
    elif isinstance(action, FormAction) and action.submit is not None:
        yield from _request_templates("submit.", action.submit)
    elif isinstance(action, ButtonAction):
        click = action.on_click
        if isinstance(click, NavigateClick):
            yield "on_click.navigate", click.navigate
        elif isinstance(click, HttpClick):
            yield from _request_templates("on_click.http.", click.http)


def secret_references(action: Action) -> dict[str, str]:
    """The secrets an action references: ``{name: the first field that references it}``."""
    found: dict[str, str] = {}
    for field, source in _action_templates(action):
        try:
            variables = analyze(source).variables
        except TemplateProblem:
            continue  # refused by validate_action; nothing it could reference
        for var in sorted(variables):
            namespace, _, key = var.partition(".")
            if namespace == "secrets":
                found.setdefault(key, field)
    return found


def template_variables(action: Action) -> list[str]:
    """Every variable an action's templates reference, sorted (``lead.email``, ``args.q``, ...).

    The dashboard's Test panel asks for one value per variable; templates that
    :func:`validate_action` refuses contribute nothing.
    """
    found: set[str] = set()
    for _field, source in _action_templates(action):
        try:
            found |= analyze(source).variables
        except TemplateProblem:
            continue
    return sorted(found)


def _undefined_secret(name: str) -> str:
    return (
        f"secret {name!r} is not defined: add it to the config's secrets: "
        f"(or store it with PUT /api/secrets/{name})"
    )


def check_secrets(actions: Iterable[Action], defined: Collection[str]) -> None:
    """Refuse an action that references a secret not in ``defined`` (only this rule).

    Raises:
        DefinitionError: naming the action, the field and the secret.
    """
    for action in actions:
        for name, field in secret_references(action).items():
            if name not in defined:
                raise DefinitionError(action.name, field, _undefined_secret(name))


def _static_content_type(req: HttpRequest) -> str:
    for name, value in req.headers.items():
        if name.lower() == "content-type" and "{" not in value:
            return value.split(";", 1)[0].strip().lower()
    return ""


class _Checker:
    """Collects the rules for one action; ``fail`` raises the first problem."""

    def __init__(
        self,
        action: Action,
        secrets: Collection[str] | None,
        destinations: DestinationCheck | None,
    ) -> None:
        self.action = action
        self.name = action.name
        self.secrets = secrets
        self.destinations = destinations
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
        for var in sorted(variables):
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
            if namespace == "secrets" and self.secrets is not None and key not in self.secrets:
                self.fail(field, _undefined_secret(key))
        return set(variables)

    def url(
        self, field: str, source: str, *, allow_form: bool = False, egress: bool = True
    ) -> None:
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
        try:
            host, port = split_authority(authority)
        except ValueError as e:
            self.fail(field, str(e))
            return
        problem = _url_text_problem(source.strip()[len(scheme) + 3 + len(authority) :])
        if problem is not None:
            self.fail(field, problem)
        if egress and self.destinations is not None:
            refusal = self.destinations(host, port or _DEFAULT_PORTS[scheme.lower()])
            if refusal is not None:
                self.fail(field, refusal)
        self.template(field, source, allow_form=allow_form)

    def header_name(self, field: str, name: str) -> None:
        if not _HEADER_NAME.match(name):
            self.fail(field, f"invalid header name {name!r}")
        if name.lower() in FORBIDDEN_HEADERS or name.lower().startswith("proxy-"):
            self.fail(field, f"header {name!r} is set by the gateway and may not be defined")

    def request(self, prefix: str, req: HttpRequest, *, allow_form: bool = False) -> None:
        self.url(f"{prefix}url", req.url, allow_form=allow_form)
        for name in req.headers:
            self.header_name(f"{prefix}headers.{name}", name)
        auth = {field for field, _ in _auth_templates(prefix, req)}
        for field, source in _request_templates(prefix, req):
            if field != f"{prefix}url":
                self.template(field, source, allow_form=allow_form and field not in auth)
        self.auth(prefix, req)
        self.body(prefix, req)
        if req.response.select:
            try:
                jmespath.compile(req.response.select)
            except jmespath.exceptions.JMESPathError as e:
                self.fail(f"{prefix}response.select", f"invalid JMESPath expression: {e}")
        for i, path in enumerate(req.response.redact):
            if not path.strip() or path.startswith(".") or ".." in path:
                self.fail(f"{prefix}response.redact[{i}]", "expected a dotted field path")

    def body(self, prefix: str, req: HttpRequest) -> None:
        ctype = _static_content_type(req)
        if not isinstance(req.body, str) or not ctype.endswith(_JSON_TYPES):
            return
        try:
            # Every variable stands for one JSON-safe token, inside a string or as a value.
            json.loads(mask_tags(req.body, "1"))
        except json.JSONDecodeError as e:
            self.fail(
                f"{prefix}body",
                f"not valid JSON around its variables ({e.msg} at line {e.lineno}) but sent as "
                f"{ctype}; fix the JSON or write the body as a YAML/JSON object",
            )

    def auth(self, prefix: str, req: HttpRequest) -> None:
        auth = req.auth
        field = f"{prefix}auth"
        if isinstance(auth, ApiKeyAuth) and auth.in_ == "header":
            self.header_name(f"{field}.name", auth.name)
        if isinstance(auth, HeadersAuth):
            for name in auth.headers:
                self.header_name(f"{field}.headers.{name}", name)
        if isinstance(auth, OAuth2ClientCredentials | OAuth2RefreshToken):
            self.url(f"{field}.token_url", auth.token_url)

    def form_fields(self, action: FormAction) -> None:
        for i, f in enumerate(action.fields):
            where = f"fields[{i}]"
            if f.maps_to is not None and not _MAPS_TO.match(f.maps_to):
                self.fail(f"{where}.maps_to", f"unknown target {f.maps_to!r} (use lead.NAME)")
            if f.type == "select" and not f.options:
                self.fail(f"{where}.options", "a select field needs options")
            if f.pattern is not None:
                try:
                    compile_pattern(f.pattern)
                except ValueError as e:
                    self.fail(f"{where}.pattern", f"invalid regular expression: {e}")
        if len(self.form) != len(action.fields):
            self.fail("fields", "field names must be unique")

    def health_check(self, action: HttpAction) -> None:
        check = action.health_check
        if check is None:
            return
        for name in check.vars:
            if not _SAMPLE_VAR.match(name):
                self.fail(
                    f"health_check.vars.{name}",
                    "expected a dotted variable such as lead.email (lead, conversation, "
                    "message or agent)",
                )
        self.sample_args(action.parameters, check.args)

    def sample_args(self, parameters: dict[str, Parameter], args: dict[str, Any]) -> None:
        """The check's sample arguments, as the executor will parse them."""
        for name, value in args.items():
            param = parameters.get(name)
            field = f"health_check.args.{name}"
            if param is None:
                declared = ", ".join(sorted(parameters)) or "none"
                self.fail(field, f"not a declared parameter (declared: {declared})")
                return
            words, test = _ARG_TYPES[param.type]
            if not test(value):
                self.fail(field, f"must be {words}, as the parameter declares")
            if param.enum is not None and value not in param.enum:
                self.fail(field, "must be one of the parameter's enum values")
        for name, param in parameters.items():
            if param.required and args.get(name) in (None, ""):
                self.fail(
                    f"health_check.args.{name}",
                    "the parameter is required: give the check a sample value",
                )

    def run(self) -> None:
        action = self.action
        if not TOOL_NAME_PATTERN.match(action.tool_name):
            self.fail("tool_name", "must match ^[a-zA-Z0-9_-]{1,64}$")
        if isinstance(action, HttpAction):
            for pname in action.parameters:
                if not _PARAM_NAME.match(pname):
                    self.fail(f"parameters.{pname}", "parameter names must be identifiers")
            self.request("", action)
            self.health_check(action)
        elif isinstance(action, FormAction):
            self.form_fields(action)
            if action.submit is not None:
                self.request("submit.", action.submit, allow_form=True)
        elif isinstance(action, ButtonAction):
            click = action.on_click
            if isinstance(click, NavigateClick):
                # The customer's browser opens this link: the egress policy is not involved,
                # and a secret placed in it would be handed to the customer.
                self.url("on_click.navigate", click.navigate, egress=False)
                if any(v.startswith("secrets.") for v in analyze(click.navigate).variables):
                    self.fail("on_click.navigate", "a link the customer opens may not use secrets")
            elif isinstance(click, HttpClick):
                self.request("on_click.http.", click.http)


def validate_action(
    action: Action,
    *,
    secrets: Collection[str] | None = None,
    destinations: DestinationCheck | None = None,
) -> None:
    """Check one action's templates, URLs, headers, body, patterns and trimming rules.

    Args:
        action: The action.
        secrets: The names of every defined secret; a reference to another one is refused.
            None skips the check (the names are not known yet).
        destinations: The egress policy's save-time check; None skips it.

    Raises:
        DefinitionError: naming the action, the field and the reason.
    """
    _Checker(action, secrets, destinations).run()


def validate_actions(
    actions: Iterable[Action],
    *,
    secrets: Collection[str] | None = None,
    destinations: DestinationCheck | None = None,
) -> None:
    """Check every action (see :func:`validate_action`) and that tool names are unique."""
    seen: dict[str, str] = {}
    for action in actions:
        validate_action(action, secrets=secrets, destinations=destinations)
        key = action.tool_name.lower()
        if key in seen:
            raise DefinitionError(
                action.name,
                "tool_name",
                f"duplicate tool name {action.tool_name!r} (also used by {seen[key]!r})",
            )
        seen[key] = action.name
