"""Running one health check of an action (its ``health_check``, README "Health checks").

A GET action, or any action whose check says ``live: true``, is really sent: through the same
executor as a tool call (egress guard, credentials, secrets, redaction, limits), on a copy
without the log store, so the check never appears in the execution log. Any other method is
rendered only (arguments, templates, credentials) and is healthy when it renders.

The result is healthy when the API answered with an expected status (``expect_status``, by
default any 2xx). Its error text comes from the executor's record, already redacted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.definitions.actions import HealthCheck, HttpAction
from gateway.engine.context import Conversation
from gateway.engine.executor import Executor
from gateway.errors import RequestError
from gateway.stores.health import HealthResult

__all__ = ["is_live", "run_check"]


def is_live(action: HttpAction, check: HealthCheck) -> bool:
    """Whether the check sends the request (GET, or ``live: true``) rather than rendering it."""
    return check.live or action.method == "GET"


def _status_error(check: HealthCheck, status: int) -> str:
    if check.expect_status is None:
        return f"HTTP {status}, expected a 2xx status"
    expected = check.expect_status
    listed = ", ".join(map(str, expected if isinstance(expected, list) else [expected]))
    return f"HTTP {status}, expected {listed}"


async def run_check(executor: Executor, action: HttpAction) -> HealthResult:
    """Run the action's health check once; never raises for a failing API.

    Args:
        executor: The gateway's executor (a copy without its log store is used).
        action: An http action with a ``health_check``.
    """
    check = action.health_check or HealthCheck()
    started = datetime.now(UTC)
    dry = not is_live(action, check)
    try:
        conversation = Conversation.from_variables(check.vars)
    except RequestError as e:
        return HealthResult(started, False, None, 0.0, str(e), dry)
    execution = await executor.without_log().execute_action(
        action, conversation, dict(check.args), dry_run=dry
    )
    record = execution.record
    status = record.response["status_code"] if record.response else None
    if dry:
        ok, error = execution.ok, None if execution.ok else record.error
    elif status is None:
        ok, error = False, record.error or f"the check ended as {record.outcome}"
    else:
        ok = check.accepts(status)
        error = None if ok else _status_error(check, status)
    return HealthResult(started, ok, status, record.duration_ms, error, dry)
