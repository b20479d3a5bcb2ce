"""Conversation context: the values templates read (README, "The proxy").

``message.sentiment`` comes from VADER, a lexicon and rule-based sentiment model, unless the
client supplies it; it is computed only when a template asks for it, once per message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from gateway.extras import MissingExtra, require_extra

__all__ = ["Conversation", "Sentiment", "classify_sentiment", "new_conversation_id"]

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


def new_conversation_id() -> str:
    """A fresh conversation id for requests that carry none."""
    return f"conv_{uuid.uuid4().hex}"


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
        """
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
