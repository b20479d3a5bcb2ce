"""Conversation context: the values templates read (README, "The proxy").

``message.sentiment`` comes from VADER, a lexicon and rule-based sentiment model, unless the
client supplies it; it is computed only when a template asks for it, once per message.

Conversation and lead values are strings of at most :data:`MAX_VALUE_CHARS` characters, wherever
they come from (the chat body, the admin test endpoint's ``variables``, ``test --var``): an
object such as ``{"$ne": null}`` must never reach a request as anything but text, so
:func:`check_value` refuses every other type with a 400 naming the field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from gateway.errors import RequestError
from gateway.extras import MissingExtra, require_extra
from gateway.ids import random_hex

__all__ = [
    "MAX_LEAD_FIELDS",
    "MAX_VALUE_CHARS",
    "Conversation",
    "Sentiment",
    "check_lead",
    "check_value",
    "check_variables",
    "classify_sentiment",
    "lead_text",
    "new_conversation_id",
    "string_values",
]

MAX_VALUE_CHARS = 1_000
"""The longest conversation or lead value (an email, a name, a note), in characters."""
MAX_LEAD_FIELDS = 50
"""The most lead fields one request may supply."""
_MAX_NAME_CHARS = 64
_VALUE_NAMESPACES = ("conversation", "lead", "message", "agent")
"""The namespaces :meth:`Conversation.from_variables` reads; their values must be strings."""

Sentiment = Literal["positive", "neutral", "negative"]
log = logging.getLogger("actiongate.context")

# VADER's documented thresholds on the compound score.
_POSITIVE = 0.05
_NEGATIVE = -0.05


@cache
def _analyzer() -> Any:
    """VADER's analyser, or ``None`` (said once in the log) when the extra is not installed."""
    try:
        vader = require_extra("vaderSentiment.vaderSentiment", "sentiment", "message.sentiment")
    except MissingExtra as e:
        log.warning("%s; every message counts as neutral", e)
        return None
    return vader.SentimentIntensityAnalyzer()


def classify_sentiment(text: str) -> Sentiment:
    """Classify a customer message as positive, neutral or negative."""
    if not text.strip():
        return "neutral"
    analyzer = _analyzer()
    if analyzer is None:
        return "neutral"
    compound = float(analyzer.polarity_scores(text)["compound"])
    if compound >= _POSITIVE:
        return "positive"
    if compound <= _NEGATIVE:
        return "negative"
    return "neutral"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _refuse(field: str, reason: str) -> RequestError:
    return RequestError(400, f"{field} {reason}", "invalid_request", param=field)


def check_value(field: str, value: Any) -> str:
    """Return ``value`` if it is a usable conversation or lead value.

    Args:
        field: The name to report (``conversation.lead.note``).
        value: What the client sent.

    Raises:
        RequestError: 400 naming ``field``: not a string, longer than :data:`MAX_VALUE_CHARS`,
            or containing a NUL character.
    """
    if not isinstance(value, str):
        raise _refuse(field, f"must be a string, not {_json_type(value)}")
    if len(value) > MAX_VALUE_CHARS:
        raise _refuse(field, f"must be at most {MAX_VALUE_CHARS} characters")
    if "\x00" in value:
        raise _refuse(field, "contains a NUL character")
    return value


def check_lead(field: str, lead: Any) -> dict[str, str]:
    """Return ``lead`` as a dict of strings, checked by :func:`check_value` field by field.

    Raises:
        RequestError: 400 naming the field: not an object, too many fields, a field name that is
            empty or longer than 64 characters, or a value :func:`check_value` refuses.
    """
    if not isinstance(lead, Mapping):
        raise _refuse(field, f"must be an object, not {_json_type(lead)}")
    if len(lead) > MAX_LEAD_FIELDS:
        raise _refuse(field, f"must have at most {MAX_LEAD_FIELDS} fields")
    out: dict[str, str] = {}
    for name, value in lead.items():
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME_CHARS or "\x00" in name:
            raise _refuse(field, f"field names must be 1 to {_MAX_NAME_CHARS} characters")
        out[name] = check_value(f"{field}.{name}", value)
    return out


def check_variables(variables: Mapping[str, Any], prefix: str = "") -> None:
    """Check the conversation values among test variables (nested or dotted).

    Args:
        variables: As :meth:`Conversation.from_variables` takes them.
        prefix: Put before each reported field name (``variables.`` for the admin API).

    Raises:
        RequestError: 400 naming the first value that is not a bounded string.
    """
    for key, value in variables.items():
        namespace = key.partition(".")[0]
        if namespace not in _VALUE_NAMESPACES:
            continue
        if "." not in key and isinstance(value, Mapping):
            if namespace == "lead":
                check_lead(f"{prefix}lead", value)
                continue
            for name, item in value.items():
                check_value(f"{prefix}{namespace}.{str(name)[:_MAX_NAME_CHARS]}", item)
        else:
            check_value(f"{prefix}{key[: 2 * _MAX_NAME_CHARS]}", value)


def string_values(stored: Any) -> dict[str, str]:
    """The string values of a stored lead (a row saved before values were checked may hold
    objects: they are dropped, never used)."""
    if not isinstance(stored, Mapping):
        return {}
    return {k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, str)}


def lead_text(value: Any) -> str:
    """A captured form value as the string every lead value is (``true``, ``42``, text)."""
    return value if isinstance(value, str) else json.dumps(value)


def new_conversation_id() -> str:
    """A fresh conversation id for requests that carry none (128 random bits, in hex)."""
    # Not uuid4(): nothing reads it as a UUID; the OS's random bytes, read in blocks.
    return f"conv_{random_hex(16)}"


class _MessageScope(Mapping[str, Any]):
    """The ``message`` namespace; sentiment is computed on first access only."""

    __slots__ = ("_conversation",)

    def __init__(self, conversation: Conversation) -> None:
        self._conversation = conversation

    def __getitem__(self, key: str) -> Any:
        if key == "content":
            return self._conversation.message
        if key == "sentiment":
            return self._conversation.sentiment
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(("content", "sentiment"))

    def __len__(self) -> int:
        return 2


@dataclass(slots=True)
class Conversation:
    """What the gateway knows about one conversation."""

    id: str = field(default_factory=new_conversation_id)
    agent_id: str | None = None
    user_id: str | None = None
    channel: str | None = None
    lead: dict[str, Any] = field(default_factory=dict)
    """Captured lead fields (``email``, ``name``, anything a form maps to ``lead.*``)."""
    message: str = ""
    """The latest customer message."""
    supplied_sentiment: Sentiment | None = None
    _sentiment: Sentiment | None = None

    @property
    def sentiment(self) -> Sentiment:
        """The client's sentiment if given, else VADER's reading of the latest message."""
        if self.supplied_sentiment is not None:
            return self.supplied_sentiment
        if self._sentiment is None:
            self._sentiment = classify_sentiment(self.message)
        return self._sentiment

    def values(
        self,
        *,
        args: Mapping[str, Any] | None = None,
        form: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The template namespaces for one execution."""
        return {
            "conversation": {"id": self.id, "user_id": self.user_id, "channel": self.channel},
            "message": _MessageScope(self),
            "lead": self.lead,
            "agent": {"id": self.agent_id},
            "args": args or {},
            "form": form or {},
            "secrets": secrets or {},
        }

    @classmethod
    def from_variables(cls, variables: Mapping[str, Any]) -> Conversation:
        """Build a context from nested (``{"lead": {"email": ..}}``) or dotted variables.

        Used by ``actiongate test --var`` and the admin test endpoint.

        Raises:
            RequestError: 400 naming a conversation, lead, message or agent value that is not a
                string of at most :data:`MAX_VALUE_CHARS` characters.
        """
        check_variables(variables)
        nested: dict[str, dict[str, Any]] = {}
        for key, value in variables.items():
            if isinstance(value, Mapping):
                nested.setdefault(key, {}).update(value)
            else:
                namespace, _, name = key.partition(".")
                nested.setdefault(namespace, {})[name] = value
        conv = nested.get("conversation", {})
        message = nested.get("message", {})
        sentiment = message.get("sentiment")
        return cls(
            id=str(conv.get("id") or new_conversation_id()),
            agent_id=nested.get("agent", {}).get("id"),
            user_id=conv.get("user_id"),
            channel=conv.get("channel"),
            lead=dict(nested.get("lead", {})),
            message=str(message.get("content") or ""),
            supplied_sentiment=sentiment if sentiment in _SENTIMENTS else None,
        )


_SENTIMENTS = frozenset({"positive", "neutral", "negative"})
