"""Configuration files: upstream, database, egress, secrets, agents and actions.

The keys are listed in the README's "Configuration reference".

Files are read by :mod:`gateway.definitions.sources` (duplicate keys refused); an error in a
YAML file names the line of the field it is about.

A file may hold a whole config, a list of actions, or a single action. ``${VAR}`` environment
references are resolved once, at load time, in every section except ``actions`` (credentials
belong in ``secrets:`` and are referenced from actions as ``{{secrets.NAME}}``, so they can be
redacted by value). Unset variables resolve to an empty string and are listed in
:attr:`Config.unset_env`: ``validate`` warns about them and ``serve`` refuses to start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from gateway.definitions.actions import Action
from gateway.definitions.sources import Source, field_path, read_source
from gateway.definitions.validation import validate_actions
from gateway.errors import ConfigError, DefinitionError
from gateway.redaction import MIN_SECRET_LENGTH

__all__ = [
    "DEFAULT_DATABASE",
    "AgentConfig",
    "Config",
    "CorsConfig",
    "EgressConfig",
    "LimitsConfig",
    "UpstreamConfig",
    "load_actions",
    "load_config",
    "parse_config",
]

DEFAULT_DATABASE = "sqlite:///actiongate.db"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ACTION = TypeAdapter(Action)
_ORIGIN = re.compile(r"^https?://(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:[0-9]{1,5})?$")
_HOST = re.compile(r"^(\*|(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$")


def _check_origin(value: str) -> str:
    """A browser origin as sent in ``Origin``: ``scheme://host[:port]``, nothing else."""
    origin = value.strip().rstrip("/").lower()
    if origin == "*" or "*" in origin:
        raise ValueError(f"{value!r}: list each origin; a wildcard is not accepted")
    if not _ORIGIN.match(origin):
        raise ValueError(
            f"{value!r} is not an origin: write scheme://host[:port] "
            "(for example https://www.example.com), without a path"
        )
    return origin


def _check_host(value: str) -> str:
    host = value.strip().lower()
    if not _HOST.match(host):
        raise ValueError(
            f"{value!r} is not a host: write a name, an address, host:port, *.example.com or *"
        )
    return host


def _check_redis_url(value: str) -> str:
    """``redis://`` or ``rediss://`` with a host; the value is never echoed (it may hold a
    password)."""
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError("not a URL: write redis://HOST:PORT/DB") from None
    if url.scheme not in {"redis", "rediss"}:
        raise ValueError("the scheme must be redis:// or rediss:// (TLS)")
    if not url.hostname:
        raise ValueError("no host: write redis://HOST:PORT/DB")
    if url.path.strip("/") and not url.path.strip("/").isdigit():
        raise ValueError("the path must be a database number, as in redis://HOST:PORT/0")
    return value


OriginStr = Annotated[str, AfterValidator(_check_origin)]
HostStr = Annotated[str, AfterValidator(_check_host)]
RedisUrl = Annotated[str, AfterValidator(_check_redis_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabasePoolConfig(BaseModel):
    """The ``database_pool:`` section: each process's database connection pool."""

    model_config = ConfigDict(extra="forbid")
    size: int = Field(default=5, ge=1, le=1_000)
    """Connections kept open."""
    overflow: int = Field(default=10, ge=0, le=1_000)
    """Connections opened beyond ``size`` under load, closed when returned."""
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    """How long a request waits for a free connection before a 503 with ``Retry-After``."""


class LimitsConfig(BaseModel):
    """The ``limits:`` section of the config."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(default=32, ge=1, le=10_000)
    """Calls to one action running at once."""
    rate: int = Field(default=30, ge=1, le=100_000)
    """Action calls allowed per conversation per ``per_s`` seconds."""
    per_s: float = Field(default=60.0, gt=0, le=86_400)
    failures: int = Field(default=5, ge=1, le=1_000)
    """Consecutive failures that open an action's circuit."""
    cooldown_s: float = Field(default=30.0, gt=0, le=3_600)
    """How long an open circuit fails fast before one trial call."""
    redis: RedisUrl | None = Field(default=None, repr=False)
    """``redis://HOST:PORT/DB`` (or ``rediss://``): share all three limits between every
    process and replica through Redis (``None``: each process keeps its own)."""
    redis_prefix: str = Field(default="actiongate:", pattern=r"^[A-Za-z0-9_.:{}-]{1,64}$")
    """Start of every Redis key, so several gateways (or tests) can share one Redis."""

    @field_validator("redis", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # "${REDIS_URL:-}" resolving to nothing means "no Redis", not a bad URL.
        return None if value == "" else value


class UpstreamConfig(_Model):
    """An OpenAI-compatible LLM API."""

    base_url: str = "https://api.openai.com/v1"
    api_key: str = ""
    model: str = "gpt-4o-mini"
    timeout_s: float = Field(default=120.0, gt=0, le=600)
    api: Literal["chat", "responses", "anthropic"] = "chat"
    """The upstream's wire format: OpenAI Chat Completions, OpenAI Responses or Anthropic
    Messages (``base_url`` is then e.g. ``https://api.anthropic.com/v1``)."""
    """Deadline for one upstream call (a streamed call: until its last chunk)."""


class UpstreamOverride(_Model):
    """Per-agent changes to the default upstream."""

    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=600)
    api: Literal["chat", "responses", "anthropic"] | None = None


class WidgetRate(_Model):
    """At most ``requests`` browser requests per client address in ``per_s`` seconds."""

    requests: int = Field(ge=1, le=100_000)
    per_s: float = Field(default=60.0, gt=0, le=86_400)


class AgentConfig(_Model):
    """A chat agent clients address by ``model``."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    name: str = ""
    system_prompt: str = ""
    upstream: UpstreamOverride | None = None
    actions: list[str] | None = None
    """Tool names enabled for this agent (``None``: every enabled action)."""
    api_keys: list[str] = Field(default_factory=list)
    """Client keys accepted for this agent; empty means no key is needed."""
    max_rounds: int = Field(default=5, ge=1, le=20)
    """Gateway-side tool rounds per request before the loop stops."""
    ui: Literal["widgets", "text"] = "widgets"
    """``text``: the agent's clients show no widgets, so forms, buttons and confirmations
    happen in conversation (``X-Actiongate-UI`` overrides it per request)."""
    cors_origins: list[OriginStr] = Field(default_factory=list)
    """Web origins whose pages may call this agent from the browser (a chat widget)."""
    widget_keys: list[str] = Field(default_factory=list)
    """Public client keys for a widget: accepted only from a page on one of ``cors_origins``."""
    widget_rate: WidgetRate | None = None
    """Requests per client address for calls from those pages (``None``: no limit)."""

    @model_validator(mode="after")
    def _widget_needs_origins(self) -> AgentConfig:
        # "${KEY:-}" resolving to nothing means "no key", not "the empty key".
        self.api_keys = [k for k in self.api_keys if k]
        self.widget_keys = [k for k in self.widget_keys if k]
        if self.widget_keys and not self.cors_origins:
            raise ValueError("widget_keys are accepted only from cors_origins: list the origins")
        if set(self.widget_keys) & set(self.api_keys):
            raise ValueError("a key cannot be both an api key and a widget key")
        return self


class CorsConfig(_Model):
    """Origins allowed to call the JSON routes from a browser."""

    allow_origins: list[OriginStr] = Field(default_factory=list)
    """Allowed on ``/v1``, ``/api`` and ``/mcp`` for every agent."""


Port = Annotated[int, Field(strict=True, ge=1, le=65535)]


class EgressConfig(_Model):
    """Outbound address policy."""

    allow: list[str] = Field(default_factory=list)
    """Host names, IP addresses or CIDRs exempt from the private-address block, each optionally
    with a port (``10.0.0.5:8092``) to open only that port; without one, every port."""
    ports: list[Port] = Field(default_factory=lambda: [80, 443])
    """The ports hosts not named in ``allow`` are reached on."""
    enabled: bool = True
    """Turning the guard off is meant for local development only."""


class Config(_Model):
    """A loaded configuration file."""

    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    database: str = DEFAULT_DATABASE
    egress: EgressConfig = Field(default_factory=EgressConfig)
    secrets: dict[str, str] = Field(default_factory=dict)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    database_pool: DatabasePoolConfig = Field(default_factory=DatabasePoolConfig)
    """Each process's connection pool (PostgreSQL; a SQLite file's too)."""
    cors: CorsConfig = Field(default_factory=CorsConfig)
    allowed_hosts: list[HostStr] | None = Field(default=None, min_length=1)
    """Host header values served (``None``: the loopback names when bound to loopback;
    ``["*"]``: every host)."""
    metrics_token: str | None = Field(default=None, min_length=16)
    """A bearer token for ``GET /metrics`` besides the admin token (a scraper's own)."""
    agents: list[AgentConfig] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    unset_env: list[str] = Field(default_factory=list, exclude=True)

    def agent(self, agent_id: str) -> AgentConfig:
        """Return the agent with this id.

        Raises:
            ConfigError: no such agent.
        """
        for agent in self.agents:
            if agent.id == agent_id:
                return agent
        known = ", ".join(a.id for a in self.agents) or "none"
        raise ConfigError(f"unknown agent {agent_id!r} (agents: {known})")

    def agent_actions(self, agent_id: str | None = None) -> list[Action]:
        """Enabled actions of one agent, or of the whole workspace when ``agent_id`` is None."""
        if agent_id is None:
            return [a for a in self.actions if a.enabled]
        agent = self.agent(agent_id)
        if agent.actions is None:
            return [a for a in self.actions if a.enabled]
        by_name = {a.tool_name: a for a in self.actions}
        return [by_name[n] for n in agent.actions if by_name[n].enabled]


def _resolve_env(node: Any, unset: list[str], environ: Mapping[str, str]) -> Any:
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = environ.get(name)
            if value is None or value == "":
                if default is not None:
                    return default
                if name not in unset:
                    unset.append(name)
                return ""
            return value

        return _ENV_REF.sub(sub, node)
    if isinstance(node, dict):
        return {k: _resolve_env(v, unset, environ) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_env(v, unset, environ) for v in node]
    return node


def _action_label(item: Any, index: int) -> str:
    if isinstance(item, dict):
        for key in ("name", "tool_name"):
            if isinstance(item.get(key), str) and item[key]:
                return str(item[key])
    return f"actions[{index}]"


def _contains_env_ref(node: Any) -> bool:
    if isinstance(node, str):
        return bool(_ENV_REF.search(node))
    if isinstance(node, dict):
        return any(_contains_env_ref(v) for v in node.values())
    if isinstance(node, list):
        return any(_contains_env_ref(v) for v in node)
    return False


def parse_action(item: Any, index: int = 0) -> Action:
    """Validate the shape of one action definition.

    Raises:
        DefinitionError: naming the action, the field and the reason.
    """
    label = _action_label(item, index)
    if not isinstance(item, dict):
        raise DefinitionError(label, "(definition)", "expected a mapping of fields")
    if "type" not in item:
        item = {**item, "type": "http"}
    if _contains_env_ref(item):
        raise DefinitionError(
            label,
            "(definition)",
            "${VAR} references belong in the config's secrets: section; "
            "reference the secret as {{secrets.NAME}}",
        )
    try:
        return _ACTION.validate_python(item)
    except PydanticValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] == str(item.get("type")):
            loc = loc[1:]  # drop the discriminator tag pydantic puts first
        if err["type"] == "union_tag_invalid":
            loc, msg = ["type"], "must be one of http, form, button"
        else:
            msg = str(err["msg"])
        raise DefinitionError(label, ".".join(loc) or "(definition)", msg) from None


def _actions_from(data: Any) -> tuple[list[Any], dict[str, Any]]:
    """Split a parsed file into (raw action items, the rest of the config)."""
    if isinstance(data, list):
        return data, {}
    if isinstance(data, dict):
        if "actions" in data:
            rest = {k: v for k, v in data.items() if k != "actions"}
            actions = data["actions"] or []
            if not isinstance(actions, list):
                raise ConfigError("actions: expected a list of action definitions")
            return actions, rest
        if "url" in data or "type" in data or "name" in data:
            return [data], {}
        return [], data
    raise ConfigError("expected a config mapping, a list of actions or a single action")


class _SectionError(ConfigError):
    """A problem in a config section; ``path`` is where in the file (for its line)."""

    def __init__(self, path: Sequence[str | int], message: str) -> None:
        self.path = tuple(path)
        super().__init__(message)


class _FileDefinitionError(DefinitionError):
    """A :class:`DefinitionError` from a file: the message starts with the file and line."""

    def __init__(self, error: DefinitionError, where: str) -> None:
        super().__init__(error.action, error.field, error.reason)
        self.args = (f"{where}: {error}",)


def _check_secrets(raw: Any, secrets: Mapping[str, str]) -> None:
    """Refuse secrets too short to be redacted from logs (their value is never named)."""
    from_env = {k for k, v in raw.items() if _contains_env_ref(v)} if isinstance(raw, dict) else ()
    for name, value in secrets.items():
        if not value and name in from_env:
            continue  # an unset ${VAR}: listed in unset_env (validate warns, serve refuses)
        if len(value) < MIN_SECRET_LENGTH:
            what = "empty" if not value else f"shorter than {MIN_SECRET_LENGTH} characters"
            raise _SectionError(
                ("secrets", name),
                f"secrets: {name}: the value is {what}; a secret that short cannot be redacted "
                "from logs (use the real credential)",
            )


def _check_agents(config: Config) -> None:
    names = {a.tool_name for a in config.actions}
    for i, agent in enumerate(config.agents):
        for tool in agent.actions or []:
            if tool not in names:
                raise _SectionError(
                    ("agents", i, "actions"),
                    f"agent {agent.id!r}: actions: unknown action {tool!r}",
                )
    if len({a.id for a in config.agents}) != len(config.agents):
        raise _SectionError(("agents",), "agents: agent ids must be unique")


def parse_config(data: Any, environ: Mapping[str, str] | None = None) -> Config:
    """Build a :class:`Config` from parsed JSON/YAML data.

    Raises:
        ConfigError: the config is invalid (a :class:`DefinitionError` for an action).
    """
    env = os.environ if environ is None else environ
    raw_actions, rest = _actions_from(data)
    raw_secrets = rest.get("secrets")
    unset: list[str] = []
    rest = _resolve_env(rest, unset, env)
    actions = [parse_action(item, i) for i, item in enumerate(raw_actions)]
    validate_actions(actions)
    try:
        config = Config.model_validate({**rest, "actions": []})
    except PydanticValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise _SectionError(err["loc"], f"config: {where}: {err['msg']}") from None
    _check_secrets(raw_secrets, config.secrets)
    config.actions = actions
    config.unset_env = unset
    _check_agents(config)
    return config


def read_file(path: str | Path) -> Any:
    """Parse a JSON or YAML file (duplicate keys are refused).

    Raises:
        ConfigError: the file cannot be read or parsed.
    """
    return read_source(path).data


def _action_line(source: Source, data: Any, error: DefinitionError) -> int | None:
    """The line of the field an action error is about (found by the action's label)."""
    raw, _ = _actions_from(data)
    matches = [i for i, item in enumerate(raw) if _action_label(item, i) == error.action]
    if not matches:
        return None
    # A duplicate tool name is reported on the later action of the two.
    index = matches[-1] if error.field == "tool_name" else matches[0]
    prefix: list[str | int] = []
    if isinstance(data, list):
        prefix = [index]
    elif isinstance(data, dict) and "actions" in data:
        prefix = ["actions", index]
    fields = [] if error.field.startswith("(") else field_path(error.field)
    return source.line_of([*prefix, *fields])


def _where(path: str | Path, line: int | None) -> str:
    return f"{path}: line {line}" if line is not None else str(path)


def load_config(
    path: str | Path,
    environ: Mapping[str, str] | None = None,
    *,
    check: Callable[[Config], None] | None = None,
) -> Config:
    """Load and validate a configuration file (a file holding only actions is valid too).

    Args:
        path: A ``.json`` file, or YAML.
        environ: Where ``${VAR}`` references are looked up (default ``os.environ``).
        check: More save-time checks to run on the loaded config (``validate`` passes the secret
            and egress checks); their errors name the file and line like the file's own.

    Raises:
        ConfigError: naming the file, and the line for a YAML field.
    """
    source = read_source(path)
    data = {} if source.data is None else source.data
    try:
        config = parse_config(data, environ)
        if check is not None:
            check(config)
        return config
    except DefinitionError as e:
        raise _FileDefinitionError(e, _where(path, _action_line(source, data, e))) from None
    except ConfigError as e:
        line = source.line_of(e.path) if isinstance(e, _SectionError) else None
        raise ConfigError(f"{_where(path, line)}: {e}") from None


def load_actions(path: str | Path) -> list[Action]:
    """Load only the actions of a file."""
    return load_config(path).actions
