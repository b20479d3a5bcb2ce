"""Action definition models (README, "Definitions and validation").

An action is one of three kinds, told apart by ``type``:

- :class:`HttpAction` — an HTTP request the gateway sends when the model calls the tool;
- :class:`FormAction` — a form shown in the chat, optionally submitted as an HTTP request;
- :class:`ButtonAction` — a button that opens a URL or fires an HTTP request.

The models check shape only. Template, URL and header rules live in
:mod:`gateway.definitions.validation`,
which :func:`gateway.definitions.config.load_actions` runs on every definition it loads.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Action",
    "ActionBase",
    "ApiKeyAuth",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "ButtonAction",
    "FormAction",
    "FormField",
    "HeadersAuth",
    "HealthCheck",
    "HttpAction",
    "HttpClick",
    "HttpRequest",
    "Method",
    "NavigateClick",
    "NoAuth",
    "OAuth2ClientCredentials",
    "OAuth2RefreshToken",
    "Parameter",
    "ResponseSpec",
    "default_tool_name",
    "refresh_secret_name",
    "request_of",
]

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
ParamType = Literal["string", "integer", "number", "boolean", "array", "object"]
FieldType = Literal["text", "email", "phone", "number", "select", "textarea", "checkbox", "date"]

MAX_TIMEOUT_S = 45.0
MIN_HEALTH_EVERY_S = 10.0
"""Shortest interval between two scheduled health checks of one action (seconds)."""
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "PUT", "DELETE"})


class _Strict(BaseModel):
    # Unknown fields are errors: a typo such as ``when_not_to_us`` must not be silently dropped.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Parameter(_Strict):
    """One model-filled input of an action, referenced in templates as ``{{args.NAME}}``."""

    type: ParamType = "string"
    """JSON type of the value the model must supply."""

    description: str = ""
    """What the value is, in words the model understands."""

    enum: list[str | int | float | bool] | None = None
    """If set, the only values accepted."""

    required: bool = False
    """A required parameter must be supplied and non-empty, or the request is not sent."""

    items: Parameter | None = None
    """Schema of the elements when ``type`` is ``array`` (default: strings)."""

    properties: dict[str, Parameter] | None = None
    """The fields when ``type`` is ``object`` (each with its own ``required``); without them an
    object parameter takes any JSON object."""

    def json_schema(self) -> dict[str, Any]:
        """Return this parameter as a JSON Schema fragment (``required`` lives on the parent)."""
        schema: dict[str, Any] = {"type": self.type}
        if self.description:
            schema["description"] = self.description
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.type == "array":
            schema["items"] = (self.items or Parameter()).json_schema()
        if self.type == "object" and self.properties:
            schema["properties"] = {k: p.json_schema() for k, p in self.properties.items()}
            required = [k for k, p in self.properties.items() if p.required]
            if required:
                schema["required"] = required
        return schema


# --- authentication (README, "Execution engine") ------------------------------------------


class NoAuth(_Strict):
    """No credentials."""

    type: Literal["none"] = "none"


class BearerAuth(_Strict):
    """``Authorization: Bearer <token>``."""

    type: Literal["bearer"] = "bearer"
    token: str
    """Usually ``{{secrets.NAME}}``."""


class ApiKeyAuth(_Strict):
    """An API key sent in a header or a query parameter."""

    type: Literal["api_key"] = "api_key"
    name: str
    """Header or query parameter name, e.g. ``X-Api-Key``."""
    in_: Literal["header", "query"] = Field(default="header", alias="in")
    value: str


class BasicAuth(_Strict):
    """HTTP Basic authentication."""

    type: Literal["basic"] = "basic"
    username: str
    password: str


class OAuth2ClientCredentials(_Strict):
    """OAuth 2.0 client-credentials grant; the token is cached until it expires."""

    type: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None


class OAuth2RefreshToken(_Strict):
    """OAuth 2.0 ``refresh_token`` grant for an authorization-code app (RFC 6749 §6).

    The operator authorizes once and stores the refresh token as a secret; the gateway trades it
    for access tokens (cached like client credentials) and, when the server rotates it, stores
    the new one encrypted under the same secret name.
    """

    type: Literal["oauth2_refresh_token"] = "oauth2_refresh_token"
    token_url: str
    client_id: str
    client_secret: str | None = None
    """None for a public client: ``client_id`` then goes in the form body."""
    refresh_token: str
    """Exactly ``{{secrets.NAME}}``: a rotated token is stored back under that name."""
    scope: str | None = None

    @field_validator("refresh_token")
    @classmethod
    def _one_secret(cls, value: str) -> str:
        if refresh_secret_name(value) is None:
            raise ValueError(
                "must be exactly {{secrets.NAME}}: the gateway stores a rotated refresh token "
                "back under that secret's name"
            )
        return value


_SECRET_REF = re.compile(r"\{\{\s*secrets\.([A-Za-z][A-Za-z0-9_]{0,63})\s*\}\}")


def refresh_secret_name(template: str) -> str | None:
    """``NAME`` when ``template`` is exactly ``{{secrets.NAME}}``, else None."""
    match = _SECRET_REF.fullmatch(template.strip())
    return match.group(1) if match else None


class HeadersAuth(_Strict):
    """Credentials as plain headers, e.g. ``{"X-Token": "{{secrets.TOKEN}}"}``."""

    type: Literal["headers"] = "headers"
    headers: dict[str, str]


Auth = Annotated[
    NoAuth
    | BearerAuth
    | ApiKeyAuth
    | BasicAuth
    | OAuth2ClientCredentials
    | OAuth2RefreshToken
    | HeadersAuth,
    Field(discriminator="type"),
]


# --- http -----------------------------------------------------------------------------------


class ResponseSpec(_Strict):
    """How an API's response is trimmed before the model sees it."""

    select: str | None = None
    """JMESPath expression applied to a JSON response body."""
    redact: list[str] = Field(default_factory=list)
    """Dotted field paths removed from the result (``customer.ssn``, ``items[*].card``)."""
    max_chars: int = Field(default=4000, ge=100, le=100_000)
    """Longest result handed to the model; longer results are cut with a note."""


class HttpRequest(_Strict):
    """An outgoing HTTP request (an http action, a form's submit, a button's click)."""

    method: Method = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    """Query parameters; values are templates, encoded by the gateway, left out when empty."""
    body: Any = None
    """A JSON value whose string leaves are templates, or a string for a non-JSON body."""
    auth: Auth | None = None
    response: ResponseSpec = Field(default_factory=ResponseSpec)
    timeout_s: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT_S)
    """Overall deadline for the whole execution, retries included."""
    retries: int | None = Field(default=None, ge=0, le=5)
    """Extra attempts on connection errors, 429 and 5xx (default 2 if idempotent, else 0)."""
    propagate_trace: bool = False
    """Send the W3C ``traceparent`` of the call's span to the API (when tracing is on)."""

    @model_validator(mode="after")
    def _default_retries(self) -> HttpRequest:
        if self.retries is None:
            self.retries = 2 if self.method in IDEMPOTENT_METHODS else 0
        return self

    @property
    def attempts(self) -> int:
        """How many times the request may be sent."""
        return 1 + (self.retries or 0)


class HealthCheck(_Strict):
    """A scheduled check that the action's API answers (README, "Health checks").

    GET actions, and any action with ``live: true``, are really sent (never into the execution
    log); other methods are rendered only, so a scheduled check cannot change real data.
    """

    every: float = 300.0
    """Seconds between two checks, at least :data:`MIN_HEALTH_EVERY_S`: a number or a duration
    such as ``"30s"``, ``"5m"``, ``"1h"``."""
    vars: dict[str, str] = Field(default_factory=dict)
    """Sample conversation variables, dotted: ``{"lead.email": "jane@example.com"}``."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Sample tool arguments; they must be valid for the action's ``parameters``."""
    expect_status: int | list[int] | None = None
    """The status (or statuses) that count as healthy; default any 2xx."""
    live: bool = False
    """Send a POST/PUT/PATCH/DELETE for real instead of rendering it only."""
    disable_after: int | None = Field(default=None, ge=1, le=1000)
    """Disable the action after this many failed checks in a row; default never."""

    @field_validator("every", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _DURATION.match(value)
            if match is None:
                raise ValueError("expected seconds or a duration such as '30s', '5m' or '1h'")
            value = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
        return value

    @field_validator("every")
    @classmethod
    def _often_enough(cls, value: float) -> float:
        if not MIN_HEALTH_EVERY_S <= value <= 86_400:
            raise ValueError(f"must be from {MIN_HEALTH_EVERY_S:g} to 86400 seconds")
        return value

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: int | list[int] | None) -> int | list[int] | None:
        codes = [value] if isinstance(value, int) else value or []
        if isinstance(value, list) and not value:
            raise ValueError("name at least one status, or leave it out for any 2xx")
        if any(not 100 <= code <= 599 for code in codes):
            raise ValueError("HTTP statuses are from 100 to 599")
        return value

    def accepts(self, status: int) -> bool:
        """Whether a response status counts as healthy."""
        if self.expect_status is None:
            return 200 <= status < 300
        if isinstance(self.expect_status, int):
            return status == self.expect_status
        return status in self.expect_status


def default_tool_name(name: str) -> str:
    """Derive a tool name: lower-case, other characters' runs become ``_``, trimmed to 64.

    >>> default_tool_name("Book a Demo!")
    'book_a_demo'
    """
    slug = re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_")
    return slug[:64].rstrip("_") or "action"


class ActionBase(_Strict):
    """Fields shared by every action."""

    name: str = Field(min_length=1, max_length=200)
    """Display name shown to operators."""
    tool_name: str = ""
    """Name the model calls; derived from ``name`` when empty."""
    description: str = ""
    """When to use the action."""
    when_not_to_use: str = ""
    """Guardrail appended to the tool description, clearly marked."""
    enabled: bool = True

    @model_validator(mode="after")
    def _derive_tool_name(self) -> ActionBase:
        if not self.tool_name:
            self.tool_name = default_tool_name(self.name)
        return self


class HttpAction(ActionBase, HttpRequest):
    """An HTTP request the gateway runs when the model calls the tool."""

    type: Literal["http"] = "http"
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    """Model-filled inputs, referenced as ``{{args.NAME}}``."""
    confirm: Literal["auto"] | bool = "auto"
    """``auto`` asks the customer before POST/PUT/PATCH/DELETE; ``true`` always; ``false`` never."""
    health_check: HealthCheck | None = None
    """A scheduled check of the API behind the action; none by default."""

    @property
    def needs_confirmation(self) -> bool:
        """Whether the customer must confirm before the request is sent."""
        if self.confirm == "auto":
            return self.method != "GET"
        return bool(self.confirm)


# --- form -----------------------------------------------------------------------------------


class FormField(_Strict):
    """One input of an in-chat form."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    label: str = ""
    type: FieldType = "text"
    required: bool = False
    options: list[str] | None = None
    """Choices for ``select`` fields."""
    pattern: str | None = None
    """Regular expression the whole value must match."""
    maps_to: str | None = None
    """Where a submitted value is captured, e.g. ``lead.email``."""


class FormAction(ActionBase):
    """A form shown inside the chat; submitted values are ``{{form.NAME}}``."""

    type: Literal["form"]
    title: str = ""
    fields: list[FormField] = Field(min_length=1)
    submit: HttpRequest | None = None


# --- button ---------------------------------------------------------------------------------


class NavigateClick(_Strict):
    """Open a URL in the customer's browser."""

    navigate: str


class HttpClick(_Strict):
    """Fire an HTTP request when clicked."""

    http: HttpRequest


class ButtonAction(ActionBase):
    """A button shown inside the chat."""

    type: Literal["button"]
    label: str = Field(min_length=1, max_length=80)
    on_click: NavigateClick | HttpClick


Action = Annotated[HttpAction | FormAction | ButtonAction, Field(discriminator="type")]


def request_of(action: HttpAction | FormAction | ButtonAction) -> HttpRequest | None:
    """The HTTP request an action sends: itself, a form's submit or a button's click, if any."""
    if isinstance(action, HttpAction):
        return action
    if isinstance(action, FormAction):
        return action.submit
    if isinstance(action.on_click, HttpClick):
        return action.on_click.http
    return None
