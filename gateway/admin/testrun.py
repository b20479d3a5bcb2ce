"""``actiongate test``: run one action once, outside any conversation, and report it.

A live test is logged like any execution. A dry run is never logged, not even when it is refused
(a missing variable, an invalid argument): it runs on a copy of the executor without a log
store, so nothing it does can reach the execution log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.definitions.actions import (
    Action,
    ButtonAction,
    FormAction,
    HttpAction,
    HttpRequest,
    request_of,
)
from gateway.definitions.config import Config
from gateway.engine.context import Conversation
from gateway.engine.executor import Execution
from gateway.engine.rendering import render_request
from gateway.engine.runtime import Runtime, open_runtime
from gateway.errors import ConfigError

__all__ = ["TestResult", "run_test"]


@dataclass(slots=True)
class TestResult:
    """What ``test`` prints."""

    execution: Execution | None
    navigate_url: str | None = None
    dry_run: bool = False
    """Asked for as a dry run: nothing was sent and nothing was logged."""

    @property
    def passed(self) -> bool:
        """Exit 0: the request ran and got 2xx, or a dry run rendered it."""
        return self.navigate_url is not None or (self.execution is not None and self.execution.ok)

    def as_json(self) -> dict[str, Any]:
        """The single object ``test --json`` prints."""
        if self.execution is None:
            return {"outcome": "navigate", "url": self.navigate_url}
        record = self.execution.record
        return {
            "outcome": "dry_run" if self.execution.dry_run else record.outcome,
            "request": record.request,
            "response": record.response,
            "duration_ms": record.duration_ms,
            "error": record.error,
            "injected_content": self.execution.content,
            "log_id": None if self.dry_run or self.execution.dry_run else record.id,
        }

    def as_text(self) -> str:
        """A readable report for a terminal."""
        if self.execution is None:
            return f"Button opens: {self.navigate_url}\n"
        record = self.execution.record
        req = record.request
        lines = [f"Request:  {req.get('method') or '-'} {req.get('url') or '-'}"]
        lines += [f"  {name}: {value}" for name, value in (req.get("headers") or {}).items()]
        if req.get("body"):
            lines.append(f"  body: {req['body']}")
        if self.execution.dry_run:
            lines.append("Outcome:  dry run (not sent)")
        else:
            status = record.response["status_code"] if record.response else "-"
            lines.append(f"Outcome:  {record.outcome}, status {status}, {record.duration_ms:g} ms")
            if record.error:
                lines.append(f"Error:    {record.error}")
        lines.append("Model receives:")
        lines += [f"  {line}" for line in self.execution.content.splitlines()]
        if self.dry_run:
            lines.append("Log record: none (dry run)")
        elif not self.execution.dry_run:
            lines.append(f"Log record: {record.id}")
        return "\n".join(lines) + "\n"


def _request_of(action: Action) -> HttpRequest | None:
    if isinstance(action, FormAction) and action.submit is None:
        raise ConfigError(f"form {action.tool_name!r} has no submit request to test")
    return request_of(action)


async def run_test(
    config: Config,
    action: Action,
    variables: Mapping[str, Any],
    args: Mapping[str, Any],
    *,
    dry_run: bool = False,
    database: str | None = None,
    warn: Callable[[str], None] = lambda _m: None,
) -> TestResult:
    """Run ``action`` once with the given variables and arguments, logging the execution."""
    request = _request_of(action)
    if request is not None and not dry_run and request.method != "GET":
        warn(
            f"{request.method} runs for real without asking for confirmation: "
            "it may change real data"
        )
    runtime = await open_runtime(config, database=database)
    try:
        return await run_test_with(runtime, action, variables, args, dry_run=dry_run)
    finally:
        await runtime.close()


async def run_test_with(
    runtime: Runtime,
    action: Action,
    variables: Mapping[str, Any],
    args: Mapping[str, Any],
    *,
    dry_run: bool = False,
) -> TestResult:
    """Run ``action`` once on an open runtime (the CLI's and the admin API's test)."""
    conversation = Conversation.from_variables(variables)
    request = _request_of(action)
    if request is None:
        assert isinstance(action, ButtonAction)
        navigate = HttpRequest(url=getattr(action.on_click, "navigate", ""))
        rendered = render_request(navigate, conversation.values())
        return TestResult(None, navigate_url=rendered.url, dry_run=dry_run)
    executor = runtime.executor.without_log() if dry_run else runtime.executor
    if isinstance(action, HttpAction):
        execution = await executor.execute_action(action, conversation, dict(args), dry_run=dry_run)
    else:
        flat = _flat(variables)
        form = {k.removeprefix("form."): v for k, v in flat.items() if k.startswith("form.")}
        execution = await executor.execute_request(
            request,
            tool=action.tool_name,
            conversation=conversation,
            values=conversation.values(form=form, secrets=executor.secrets),
            dry_run=dry_run,
        )
    return TestResult(execution, dry_run=dry_run)


def _flat(variables: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in variables.items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out
