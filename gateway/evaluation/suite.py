"""An eval suite: labelled conversations and what the model should do in each.

A suite is YAML::

    agent: support            # optional; --agent wins
    runs: 3                   # optional; --runs wins; each case is sent this many times
    thresholds:               # optional; below any of them, `actiongate eval` exits 1
      precision: 0.9          # for every action the cases mention ...
      recall: 0.9
      false_trigger_rate: 0.1
      argument_mismatches: 0
      actions:                # ... or per action, over the defaults above
        submit_refund: {precision: 1.0}
    cases:
      - name: asks where an order is
        messages:
          - {role: user, content: "Where is order A-10023?"}
        conversation: {lead: {email: jane@example.com}, user_id: u-1, channel: chat}
        calls: [look_up_order]
        arguments: {look_up_order: {order_number: A-10023}}   # optional, a subset match
      - name: no order number given
        messages: [{role: user, content: "Where is my order?"}]
        skips: [look_up_order]
        only: false           # true: every action not in `calls` must be skipped too

``calls`` are actions the model must call in its first answer, ``skips`` actions it must not
call; a case judges only the actions it names unless ``only`` is true. A message that is just a
string is a user message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.errors import ConfigError

__all__ = ["Case", "Suite", "Thresholds", "load_suite", "parse_suite"]

METRICS = ("precision", "recall", "false_trigger_rate", "argument_mismatches")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limits(_Strict):
    """Minimum precision and recall, maximum false-trigger rate and argument mismatches."""

    precision: float | None = Field(default=None, ge=0, le=1)
    recall: float | None = Field(default=None, ge=0, le=1)
    false_trigger_rate: float | None = Field(default=None, ge=0, le=1)
    argument_mismatches: int | None = Field(default=None, ge=0)


class Thresholds(Limits):
    """Suite-wide limits, and per-action ones that override them field by field."""

    actions: dict[str, Limits] = Field(default_factory=dict)

    def for_action(self, tool: str) -> Limits:
        """The limits that apply to ``tool``."""
        own = self.actions.get(tool)
        merged = {name: getattr(self, name) for name in METRICS}
        if own is not None:
            merged |= {k: v for k, v in own.model_dump().items() if v is not None}
        return Limits(**merged)


class Case(_Strict):
    """One labelled conversation."""

    name: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    conversation: dict[str, Any] = Field(default_factory=dict)
    calls: list[str] = Field(default_factory=list)
    skips: list[str] = Field(default_factory=list)
    arguments: dict[str, dict[str, Any]] = Field(default_factory=dict)
    only: bool = False

    @field_validator("messages", mode="before")
    @classmethod
    def _strings_are_user_messages(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"role": "user", "content": m} if isinstance(m, str) else m for m in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Case:
        if not self.calls and not self.skips and not self.only:
            raise ValueError("a case needs `calls`, `skips` or `only: true`")
        both = sorted(set(self.calls) & set(self.skips))
        if both:
            raise ValueError(f"{both[0]!r} is in both calls and skips")
        stray = sorted(set(self.arguments) - set(self.calls))
        if stray:
            raise ValueError(f"arguments for {stray[0]!r}, which is not in calls")
        return self


class Suite(_Strict):
    """A suite file."""

    agent: str | None = None
    runs: int = Field(default=1, ge=1, le=100)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    cases: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Suite:
        seen: set[str] = set()
        for case in self.cases:
            if case.name in seen:
                raise ValueError(f"two cases are named {case.name!r}")
            seen.add(case.name)
        return self

    def mentioned(self) -> list[str]:
        """Every action some case names, in first-mention order."""
        names: dict[str, None] = {}
        for case in self.cases:
            names.update(dict.fromkeys([*case.calls, *case.skips]))
        names.update(dict.fromkeys(self.thresholds.actions))
        return list(names)


def parse_suite(data: Any, source: str = "suite") -> Suite:
    """A :class:`Suite` from parsed YAML.

    Raises:
        ConfigError: naming the case and field that is wrong.
    """
    try:
        return Suite.model_validate(data)
    except ValidationError as e:
        error = e.errors()[0]
        where = _where(data, error["loc"])
        raise ConfigError(f"{source}: {where}: {error['msg']}") from None


def _where(data: Any, loc: tuple[int | str, ...]) -> str:
    """``cases[2] ("no order number").skips`` from a pydantic location."""
    parts: list[str] = []
    node = data
    for step in loc:
        if isinstance(step, int):
            parts[-1] += f"[{step}]"
            node = node[step] if isinstance(node, list) and step < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                parts[-1] += f" ({node['name']!r})"
        else:
            parts.append(str(step))
            node = node.get(step) if isinstance(node, dict) else None
    return ".".join(parts) or "the suite"


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file.

    Raises:
        ConfigError: unreadable, not YAML, or not a valid suite.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the suite: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_suite(data, str(path))
