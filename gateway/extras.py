"""Optional parts of actiongate and the one-line error when one is not installed.

The base install runs the gateway on SQLite. PostgreSQL (``asyncpg``), the MCP server
(``mcp``), VADER sentiment (``vaderSentiment``), the OTLP trace exporter and limits shared
through Redis (``redis``) are extras: ``pip install 'actiongate[postgres]'``, ``[mcp]``,
``[sentiment]``, ``[otlp]``, ``[redis]``, or ``[all]``.
The README's set-up commands install all of them.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Literal

from gateway.errors import ConfigError

__all__ = ["Extra", "MissingExtra", "require_extra"]

Extra = Literal["postgres", "mcp", "sentiment", "demo", "otlp", "redis"]


class MissingExtra(ConfigError):
    """A feature needs an optional package that is not installed."""

    def __init__(self, feature: str, extra: Extra) -> None:
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'actiongate[{extra}]'")
        self.extra = extra


def require_extra(module: str, extra: Extra, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(feature, extra) from None
