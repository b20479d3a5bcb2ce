"""Errors raised by actiongate.

The hierarchy::

    ActionGateError
    ├── ConfigError              bad configuration file or environment references
    │   └── DefinitionError      one action definition is invalid (names action and field)
    ├── ExecutionRefused         a tool call that must not be sent (outcome ``rejected``)
    │   ├── MissingVariableError a required template variable is missing or empty
    │   ├── HeaderValueError     a rendered header value is unsafe
    │   └── ArgumentError        the model's arguments are malformed or do not fit the schema
    ├── EgressBlocked            the destination is not allowed (outcome ``blocked``)
    ├── RequestError             a client request the proxy refuses (status, code, param)
    └── UpstreamError            the LLM upstream failed (carries the HTTP status to answer with)

A failed action is a *result* (a log record plus a tool message the model reads); only upstream
failures, turn limits and bad configuration surface as errors to the caller.
"""

from __future__ import annotations

__all__ = [
    "ActionGateError",
    "ArgumentError",
    "ConfigError",
    "DefinitionError",
    "EgressBlocked",
    "ExecutionRefused",
    "HeaderValueError",
    "MissingVariableError",
    "RequestError",
    "UpstreamError",
]


class ActionGateError(Exception):
    """Base class of every error actiongate raises on purpose."""


class ConfigError(ActionGateError):
    """The configuration cannot be used."""


class DefinitionError(ConfigError):
    """An action definition is invalid.

    The message always names the action, the field and the reason, and never contains a secret.
    """

    def __init__(self, action: str, field: str, reason: str) -> None:
        self.action = action
        self.field = field
        self.reason = reason
        super().__init__(f"action {action!r}: {field}: {reason}")


class ExecutionRefused(ActionGateError):
    """The tool call was refused before anything was sent."""


class MissingVariableError(ExecutionRefused):
    """A required variable has no value, so the request is not sent."""

    def __init__(self, variable: str) -> None:
        self.variable = variable
        super().__init__(
            f"the value '{variable}' is missing; "
            "ask the customer for it (or supply it) before using this action"
        )


class HeaderValueError(ExecutionRefused):
    """A rendered header value contains characters that could split or smuggle headers."""

    def __init__(self, header: str, reason: str) -> None:
        self.header = header
        super().__init__(f"header {header!r} would get an invalid value: {reason}")


class ArgumentError(ExecutionRefused):
    """The model's tool-call arguments were refused (message written for the model)."""


class EgressBlocked(ActionGateError):
    """The destination address is forbidden by the egress policy."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"egress to {host!r} blocked: {reason}")


class UpstreamError(ActionGateError):
    """The LLM upstream failed; ``status`` is the HTTP status the proxy answers with."""

    def __init__(self, status: int, message: str, code: str = "upstream_error") -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class RequestError(ActionGateError):
    """A client request the proxy refuses; answered in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "invalid_request",
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.param = param
        self.kind = kind
        self.headers = headers or {}
        """Response headers to send with the error (``Retry-After``)."""
        super().__init__(message)
