"""What operators can do, shared by the admin REST API and the dashboard.

Definitions come from the config file, overlaid by what the admin API stored in the database
(:mod:`gateway.stores.definitions`). Every write is validated exactly like a file, stored, and
swapped into the live :class:`~gateway.engine.workspace.Workspace`, so the proxy uses it on its next
request.

Credentials written literally into a definition are write-only: reads show :data:`MASK`, and a
write that sends :data:`MASK` back keeps the stored value. That covers auth fields, headers named
like a credential (``X-Customer-Key``), and by name query parameters (``api_key``, ``token``, in
``query`` or the URL) and JSON body fields (``password``), at any depth.

Agents are stored with their client keys hashed and a per-agent upstream key encrypted in the
secret store (:func:`~gateway.stores.secrets.seal_agent`); rows stored before that are rewritten
so at the next load.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from pydantic import ValidationError as PydanticValidationError

from adapters import export_tools
from gateway.admin.guardrail_checks import GuardrailChecks
from gateway.admin.testrun import TestResult, run_test_with
from gateway.definitions.actions import Action, HttpAction
from gateway.definitions.config import AgentConfig, Config, parse_action
from gateway.definitions.templating import analyze
from gateway.definitions.tools import to_tool_definitions
from gateway.definitions.validation import (
    check_secrets,
    secret_references,
    validate_action,
    validate_actions,
)
from gateway.engine.context import check_variables
from gateway.engine.executor import Executor
from gateway.engine.health import run_check
from gateway.engine.runtime import Runtime
from gateway.engine.workspace import Workspace
from gateway.errors import ConfigError, DefinitionError, RequestError
from gateway.redaction import is_credential_header, is_credential_param
from gateway.stores.definitions import TOMBSTONE, DefinitionStore
from gateway.stores.eval_cases import EvalCaseStore
from gateway.stores.health import HealthResult
from gateway.stores.secrets import (
    UPSTREAM_KEY_REF,
    SecretStore,
    needs_sealing,
    open_agent,
    seal_agent,
    sealed_name,
)
from gateway.telemetry import metrics

log = logging.getLogger("actiongate.admin")

__all__ = ["MASK", "UPSTREAM_KEY_REF", "Admin", "NotFound"]

MASK = "********"
_AUTH_SECRET_FIELDS = ("token", "value", "password", "client_secret")


class NotFound(RequestError):
    """A 404 in OpenAI's error shape."""

    def __init__(self, what: str) -> None:
        super().__init__(404, f"{what} not found", code="not_found")


def _is_reference(value: str) -> bool:
    """A template that only references secrets (safe to show) or has no literal credential."""
    info = analyze(value) if "{" in value else None
    return bool(info and info.variables and all(v.startswith("secrets.") for v in info.variables))


def _mask_map(values: dict[str, Any], names: Any) -> None:
    for key in list(values):
        value = values[key]
        if isinstance(value, str) and key in names and value and not _is_reference(value):
            values[key] = MASK


def _is_credential_header(name: str) -> bool:
    # Beyond the log's rule: any header with a `key` word (X-Customer-Key, Ocp-Apim-...-Key)
    # is taken for a credential here, as an Idempotency-Key shown masked costs nothing.
    return is_credential_header(name) or "key" in re.split(r"[-_]", name.lower())


def _is_credential_field(name: str) -> bool:
    # As the log's redaction reads JSON: `key` alone names ordinary identifiers in bodies.
    return name.lower() != "key" and is_credential_param(name)


def _mask_body(value: Any) -> None:
    if isinstance(value, dict):
        _mask_map(value, {k for k in value if isinstance(k, str) and _is_credential_field(k)})
        for item in value.values():
            _mask_body(item)
    elif isinstance(value, list):
        for item in value:
            _mask_body(item)


def _query_pairs(url: str) -> tuple[str, list[str], str]:
    """``url`` as (before the query, its ``name=value`` pairs, ``#fragment``)."""
    rest, mark, query = url.partition("?")
    if not mark:
        return url, [], ""
    query, hash_mark, fragment = query.partition("#")
    return rest, query.split("&"), hash_mark + fragment


def _credential_pair(pair: str) -> tuple[str, str] | None:
    name, equals, value = pair.partition("=")
    if equals and value and is_credential_param(unquote_plus(name)):
        return name, value
    return None


def _mask_url(url: str) -> str:
    rest, pairs, fragment = _query_pairs(url)
    if not pairs:
        return url
    for i, pair in enumerate(pairs):
        found = _credential_pair(pair)
        if found is not None and not _is_reference(found[1]):
            pairs[i] = f"{found[0]}={MASK}"
    return f"{rest}?{'&'.join(pairs)}{fragment}"


def _unmask_url(new: str, old: str) -> str:
    """Put back the stored values of credential query parameters sent as :data:`MASK`."""
    rest, pairs, fragment = _query_pairs(new)
    stored: dict[str, list[str]] = {}
    for pair in _query_pairs(old)[1]:
        found = _credential_pair(pair)
        if found is not None:
            stored.setdefault(found[0], []).append(found[1])
    for i, pair in enumerate(pairs):
        found = _credential_pair(pair)
        if found is not None and found[1] == MASK and stored.get(found[0]):
            pairs[i] = f"{found[0]}={stored[found[0]].pop(0)}"
    return f"{rest}?{'&'.join(pairs)}{fragment}" if pairs else new


def mask(definition: dict[str, Any]) -> dict[str, Any]:
    """A copy of an action definition with literal credentials replaced by :data:`MASK`."""
    out = copy.deepcopy(definition)
    for request in _requests(out):
        headers = request.get("headers") or {}
        _mask_map(headers, {k for k in headers if _is_credential_header(k)})
        query = request.get("query") or {}
        _mask_map(query, {k for k in query if is_credential_param(k)})
        if isinstance(request.get("url"), str):
            request["url"] = _mask_url(request["url"])
        _mask_body(request.get("body"))
        auth = request.get("auth") or {}
        _mask_map(auth, _AUTH_SECRET_FIELDS)
        _mask_map(auth.get("headers") or {}, set(auth.get("headers") or {}))
    return out


def unmask(new: Any, old: Any) -> Any:
    """Put stored values back wherever a write sent :data:`MASK` (lists by position)."""
    if new == MASK:
        return old
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: unmask(v, old.get(k)) for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, list):
        return [unmask(n, old[i]) if i < len(old) else n for i, n in enumerate(new)]
    if isinstance(new, str) and isinstance(old, str) and MASK in new:
        return _unmask_url(new, old)
    return new


def _requests(definition: dict[str, Any]) -> list[dict[str, Any]]:
    found = [definition]
    if isinstance(definition.get("submit"), dict):
        found.append(definition["submit"])
    click = definition.get("on_click")
    if isinstance(click, dict) and isinstance(click.get("http"), dict):
        found.append(click["http"])
    return found


def _dump(action: Action) -> dict[str, Any]:
    return action.model_dump(mode="json", by_alias=True, exclude_none=True)


def _invalid(e: ConfigError) -> RequestError:
    param = e.field if isinstance(e, DefinitionError) else None
    return RequestError(422, str(e), code="invalid_definition", param=param)


class RotatedSecrets:
    """Refresh tokens an OAuth server rotated, kept as the secrets they replace.

    The new value is sealed in the secret store under the same name (so it survives a restart
    and every replica reads it before its next refresh), registered for redaction, and used by
    this process at once.
    """

    def __init__(self, store: SecretStore, executor: Executor) -> None:
        self._store = store
        self._executor = executor

    async def current(self, name: str) -> str | None:
        return await self._store.get(name)

    async def rotate(self, name: str, value: str) -> None:
        self._executor.redactor.add_secret(value)
        await self._store.put(name, value)
        self._executor.secrets[name] = value
        log.info("stored the rotated refresh token in secret %s", name)


class Admin:
    """Operator actions on one workspace."""

    def __init__(
        self,
        config: Config,
        workspace: Workspace,
        store: DefinitionStore,
        runtime: Runtime,
        secrets: SecretStore | None = None,
    ) -> None:
        self.config = config
        self.workspace = workspace
        self.store = store
        self.runtime = runtime
        self.secrets = secrets
        self._base_secrets = dict(config.secrets)
        self._base_actions = {a.tool_name: _dump(a) for a in config.actions}
        self._base_agents = {a.id: a.model_dump(mode="json") for a in config.agents}
        self._fingerprint = ""
        self.guardrails = GuardrailChecks(config, workspace, EvalCaseStore(runtime.engine))
        """Each action's Guardrail check cases and their runs."""
        if secrets is not None:
            runtime.executor.oauth.refresh_store = RotatedSecrets(secrets, runtime.executor)

    # --- loading --------------------------------------------------------------------------

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload stored definitions if any replica changed them; True when something changed."""
        fingerprint = await self.store.fingerprint()
        if fingerprint == self._fingerprint and not force:
            return False
        stored_actions, stored_agents = await self.store.load()
        stored_agents = {k: await self._in_memory(k, v) for k, v in stored_agents.items()}
        actions = {**self._base_actions, **stored_actions}
        agents = {**self._base_agents, **stored_agents}
        parsed = [parse_action(d, i) for i, d in enumerate(actions.values()) if d != TOMBSTONE]
        agent_models = [AgentConfig.model_validate(d) for d in agents.values() if d != TOMBSTONE]
        # A secret no action can get would only fail at call time: refuse it here (at start-up,
        # this stops serve), before the workspace changes.
        check_secrets(parsed, await self._defined_secrets())
        self.workspace.replace(actions=parsed, agents=agent_models)
        if self.secrets is not None:
            await self._load_secrets(self.secrets)
        self._fingerprint = fingerprint
        return True

    async def _defined_secrets(self) -> set[str]:
        """The secret names actions may reference: the file's and the store's (readable) ones."""
        names = set(self._base_secrets)
        if self.secrets is not None:
            names |= {s["name"] for s in await self.secrets.names() if s["readable"]}
        return names

    async def _load_secrets(self, store: SecretStore) -> None:
        """Stored secrets win over the file's; every value is registered for redaction."""
        stored = await store.load()
        executor = self.runtime.executor
        for value in stored.values():
            executor.redactor.add_secret(value)
        executor.secrets.clear()
        executor.secrets.update({**self._base_secrets, **stored})

    async def _in_memory(self, agent_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """A stored agent as the workspace holds it (upstream key decrypted).

        A row stored before keys were hashed and sealed is rewritten that way first.
        """
        if data == TOMBSTONE:
            return data
        if needs_sealing(data, sealable=self.secrets is not None):
            data = await self._put_agent(agent_id, data)
        return await open_agent(self.secrets, agent_id, data)

    async def _put_agent(self, agent_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Store an agent with no clear credential in it; returns what was stored."""
        stored = await seal_agent(self.secrets, agent_id, data)
        await self.store.put_agent(agent_id, stored)
        return stored

    # --- secrets --------------------------------------------------------------------------

    def _secret_store(self) -> SecretStore:
        if self.secrets is None:
            raise RequestError(404, "the secret store is not available", "not_found")
        return self.secrets

    async def list_secrets(self) -> list[dict[str, Any]]:
        """Secret names (never values): from the file and from the store."""
        stored = {s["name"]: s for s in await self._secret_store().names()}
        names = sorted(set(self._base_secrets) | set(stored))
        out = []
        for name in names:
            item: dict[str, Any] = {"name": name, "source": "store" if name in stored else "config"}
            if name in stored:
                item["updated_at"] = stored[name]["updated_at"]
                item["readable"] = stored[name]["readable"]
            out.append(item)
        return out

    async def put_secret(self, name: str, value: Any) -> None:
        """Set a secret in the encrypted store (write-only)."""
        if not isinstance(value, str):
            raise RequestError(422, "value must be a string", "invalid_secret", "value")
        await self._secret_store().put(name, value)
        await self.refresh(force=True)

    async def delete_secret(self, name: str) -> None:
        """Remove a stored secret (the file's value, if any, applies again).

        Refused (409) while an action references it and the file does not define it.
        """
        if name not in self._base_secrets:
            users = sorted(
                a.tool_name for a in self.workspace.actions.values() if name in secret_references(a)
            )
            if users:
                raise RequestError(
                    409,
                    f"secret {name!r} is used by action {users[0]!r}; "
                    "remove it from the action first",
                    "conflict",
                    "name",
                )
        if not await self._secret_store().delete(name):
            raise NotFound(f"secret {name!r} in the store")
        await self.refresh(force=True)

    def _definition(self, tool_name: str) -> dict[str, Any]:
        action = self.workspace.actions.get(tool_name)
        if action is None:
            raise NotFound(f"action {tool_name!r}")
        return _dump(action)

    # --- actions --------------------------------------------------------------------------

    def list_actions(self) -> list[dict[str, Any]]:
        """Every action, masked, in tool-name order."""
        return [mask(_dump(a)) for _, a in sorted(self.workspace.actions.items())]

    def get_action(self, tool_name: str) -> dict[str, Any]:
        """One action, masked."""
        return mask(self._definition(tool_name))

    async def _save_action(self, data: Any, *, replacing: str | None) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise RequestError(422, "expected an action definition object", "invalid_definition")
        try:
            action = parse_action(data)
            others = [a for n, a in self.workspace.actions.items() if n != replacing]
            validate_actions([*others, action])
            # Only the saved action: one stored under older rules must not block every save.
            validate_action(
                action,
                secrets=await self._defined_secrets(),
                destinations=self.runtime.outbound.policy.save_time_refusal,
            )
        except ConfigError as e:
            raise _invalid(e) from None
        if replacing is not None and action.tool_name != replacing:
            if action.tool_name in self.workspace.actions:
                raise RequestError(409, f"action {action.tool_name!r} already exists", "conflict")
            await self.store.put_action(replacing, TOMBSTONE)
            await self.guardrails.rename(replacing, action.tool_name)
        await self.store.put_action(action.tool_name, _dump(action))
        await self.refresh(force=True)
        return mask(_dump(action))

    async def create_action(self, data: Any) -> dict[str, Any]:
        """Create an action (409 if its tool name exists)."""
        if isinstance(data, dict):
            try:
                tool_name = parse_action(data).tool_name
            except ConfigError as e:
                raise _invalid(e) from None
            if tool_name in self.workspace.actions:
                raise RequestError(409, f"action {tool_name!r} already exists", "conflict")
        return await self._save_action(data, replacing=None)

    async def replace_action(self, tool_name: str, data: Any) -> dict[str, Any]:
        """Replace an action (``PUT``); masked values keep what was stored."""
        old = self._definition(tool_name)
        if isinstance(data, dict):
            data = unmask({"tool_name": tool_name, **data}, old)
        return await self._save_action(data, replacing=tool_name)

    async def patch_action(self, tool_name: str, patch: Any) -> dict[str, Any]:
        """Merge fields into an action (``PATCH``, JSON merge patch semantics)."""
        old = self._definition(tool_name)
        if not isinstance(patch, dict):
            raise RequestError(422, "expected an object of fields to change", "invalid_definition")
        merged = _merge(old, unmask(patch, old))
        return await self._save_action(merged, replacing=tool_name)

    async def delete_action(self, tool_name: str) -> None:
        """Delete an action (and stop offering it to every agent)."""
        self._definition(tool_name)
        await self.store.put_action(tool_name, TOMBSTONE)
        await self.guardrails.store.forget(tool_name)
        for agent in list(self.workspace.agents.values()):
            if agent.actions is not None and tool_name in agent.actions:
                data = agent.model_dump(mode="json")
                data["actions"] = [n for n in agent.actions if n != tool_name]
                await self._put_agent(agent.id, data)
        await self.refresh(force=True)

    async def test_action(
        self, tool_name: str, variables: Any, args: Any, dry_run: bool
    ) -> TestResult:
        """Run an action once (the dashboard's test panel)."""
        action = self.workspace.actions.get(tool_name)
        if action is None:
            raise NotFound(f"action {tool_name!r}")
        if not isinstance(variables, dict) or not isinstance(args, dict):
            raise RequestError(422, "variables and args must be objects", "invalid_request")
        check_variables(variables, "variables.")
        return await run_test_with(self.runtime, action, variables, args, dry_run=dry_run)

    async def disable_action(self, tool_name: str) -> None:
        """Disable an action for every agent (``enabled: false``, stored like any edit)."""
        await self.patch_action(tool_name, {"enabled": False})

    # --- health checks --------------------------------------------------------------------

    async def action_health(self, tool_name: str) -> dict[str, Any]:
        """The action's newest health check result and its history, newest first."""
        self._definition(tool_name)
        history = [r.to_dict() for r in await self.runtime.health.history(tool_name)]
        return {"latest": history[0] if history else None, "history": history}

    async def run_health_check(self, tool_name: str) -> dict[str, Any]:
        """Run the action's health check now and store its result (422 without a check)."""
        action = self.workspace.actions.get(tool_name)
        if action is None:
            raise NotFound(f"action {tool_name!r}")
        if not isinstance(action, HttpAction) or action.health_check is None:
            raise RequestError(
                422, f"action {tool_name!r} has no health_check", "no_health_check", "tool_name"
            )
        result = await run_check(self.runtime.executor, action)
        await self.runtime.health.add(tool_name, result)
        metrics.health(tool_name, result.ok)
        return result.to_dict()

    async def health_overview(self) -> dict[str, HealthResult]:
        """Every action's newest health check result, by tool name."""
        return await self.runtime.health.latest_by_tool()

    # --- agents ---------------------------------------------------------------------------

    def list_agents(self) -> list[dict[str, Any]]:
        """Every agent, with its enabled tool names."""
        return [self.get_agent(agent_id) for agent_id in sorted(self.workspace.agents)]

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        """One agent (client keys are write-only and shown masked)."""
        agent = self.workspace.agents.get(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id!r}")
        data = agent.model_dump(mode="json")
        data["api_keys"] = [MASK for _ in agent.api_keys]
        if data.get("upstream") and data["upstream"].get("api_key"):
            data["upstream"]["api_key"] = MASK
        view = self.workspace.view(agent_id)
        data["enabled_actions"] = sorted(view.actions) if view else []
        return data

    async def save_agent(
        self, agent_id: str | None, data: Any, *, merge: bool = False
    ) -> dict[str, Any]:
        """Create (``agent_id`` None), replace or merge an agent."""
        if not isinstance(data, dict):
            raise RequestError(422, "expected an agent object", "invalid_definition")
        data = {k: v for k, v in data.items() if k != "enabled_actions"}
        old = None
        if agent_id is not None:
            current = self.workspace.agents.get(agent_id)
            if current is None:
                raise NotFound(f"agent {agent_id!r}")
            old = current.model_dump(mode="json")
            if data.get("id", agent_id) != agent_id:
                raise RequestError(
                    422,
                    "agent: id: cannot be changed (create a new agent instead)",
                    "invalid_definition",
                    "id",
                )
            data = _merge(old, data) if merge else {**data, "id": agent_id}
            # Masked keys sent back keep the stored ones, position by position.
            data = unmask(data, old)
        elif isinstance(data.get("id"), str) and data["id"] in self.workspace.agents:
            raise RequestError(409, f"agent {data['id']!r} already exists", "conflict")
        if isinstance(data.get("api_keys"), list) and MASK in data["api_keys"]:
            raise RequestError(
                422,
                f"agent: api_keys: {MASK!r} stands for a stored key; there is none at its place",
                "invalid_definition",
                "api_keys",
            )
        try:
            agent = AgentConfig.model_validate(data)
        except PydanticValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(agent)"
            raise RequestError(
                422, f"agent: {field}: {err['msg']}", "invalid_definition", field
            ) from None
        unknown = [n for n in agent.actions or [] if n not in self.workspace.actions]
        if unknown:
            raise RequestError(
                422,
                f"agent: actions: unknown action {unknown[0]!r}",
                "invalid_definition",
                "actions",
            )
        await self._put_agent(agent.id, agent.model_dump(mode="json"))
        await self.refresh(force=True)
        return self.get_agent(agent.id)

    async def delete_agent(self, agent_id: str) -> None:
        """Delete an agent."""
        if agent_id not in self.workspace.agents:
            raise NotFound(f"agent {agent_id!r}")
        await self.store.put_agent(agent_id, TOMBSTONE)
        if self.secrets is not None:
            await self.secrets.delete_sealed(sealed_name("upstream_api_key", agent_id))
        await self.refresh(force=True)

    async def toggle(self, agent_id: str, tool_name: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable one action for one agent."""
        agent = self.workspace.agents.get(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id!r}")
        if tool_name not in self.workspace.actions:
            raise NotFound(f"action {tool_name!r}")
        names = list(agent.actions) if agent.actions is not None else sorted(self.workspace.actions)
        if enabled and tool_name not in names:
            names.append(tool_name)
        if not enabled:
            if tool_name not in names:
                raise NotFound(f"action {tool_name!r} on agent {agent_id!r}")
            names.remove(tool_name)
        data = agent.model_dump(mode="json")
        data["actions"] = names
        await self._put_agent(agent_id, data)
        await self.refresh(force=True)
        return self.get_agent(agent_id)

    def export(self, agent_id: str, fmt: str) -> Any:
        """The agent's tools in one of the export formats."""
        view = self.workspace.view(agent_id)
        if view is None:
            raise NotFound(f"agent {agent_id!r}")
        try:
            return export_tools(to_tool_definitions(view.actions.values()), fmt)
        except ValueError as e:
            raise RequestError(400, str(e), "invalid_format", "format") from None


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
