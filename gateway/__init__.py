"""actiongate: Custom Actions for any chat agent that speaks the OpenAI API."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
