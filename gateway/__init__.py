"""actiongate: Custom Actions for any chat agent, behind a drop-in LLM API proxy.

The supported Python API is what this module exports; everything else is internal and may move.
Names load on first use, so ``import gateway`` stays cheap (no web framework is imported until
:func:`create_app` is asked for)::

    import gateway

    config = gateway.load_config("actiongate.yaml")
    tools = gateway.export_tools(gateway.to_tool_definitions(config.actions), "anthropic")
    app = gateway.create_app(config)          # an ASGI app: serve it with uvicorn

Errors form one hierarchy (:mod:`gateway.errors`)::

    ActionGateError
    ├── ConfigError ── DefinitionError       a config or definition is not valid
    ├── ExecutionRefused                     an action call was not sent (the model is told)
    │   ├── MissingVariableError, HeaderValueError, ArgumentError
    ├── EgressBlocked                        the destination is not allowed
    ├── UpstreamError                        the LLM API failed
    └── RequestError                         a client request is refused (status, code)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gateway.version import __version__

_EXPORTS = {
    "Action": "gateway.definitions.actions",
    "Config": "gateway.definitions.config",
    "load_config": "gateway.definitions.config",
    "parse_config": "gateway.definitions.config",
    "to_tool_definitions": "gateway.definitions.tools",
    "ToolDefinition": "adapters",
    "export_tools": "adapters",
    "FORMATS": "adapters",
    "create_app": "gateway.app",
    "ActionGateError": "gateway.errors",
    "ConfigError": "gateway.errors",
    "DefinitionError": "gateway.errors",
    "ExecutionRefused": "gateway.errors",
    "MissingVariableError": "gateway.errors",
    "HeaderValueError": "gateway.errors",
    "ArgumentError": "gateway.errors",
    "EgressBlocked": "gateway.errors",
    "UpstreamError": "gateway.errors",
    "RequestError": "gateway.errors",
}

__all__ = [
    "FORMATS",
    "Action",
    "ActionGateError",
    "ArgumentError",
    "Config",
    "ConfigError",
    "DefinitionError",
    "EgressBlocked",
    "ExecutionRefused",
    "HeaderValueError",
    "MissingVariableError",
    "RequestError",
    "ToolDefinition",
    "UpstreamError",
    "__version__",
    "create_app",
    "export_tools",
    "load_config",
    "parse_config",
    "to_tool_definitions",
]

if TYPE_CHECKING:
    from adapters import FORMATS, ToolDefinition, export_tools
    from gateway.app import create_app
    from gateway.definitions.actions import Action
    from gateway.definitions.config import Config, load_config, parse_config
    from gateway.definitions.tools import to_tool_definitions
    from gateway.errors import (
        ActionGateError,
        ArgumentError,
        ConfigError,
        DefinitionError,
        EgressBlocked,
        ExecutionRefused,
        HeaderValueError,
        MissingVariableError,
        RequestError,
        UpstreamError,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
