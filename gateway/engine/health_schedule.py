"""The background task that runs actions' health checks when they are due.

Every tick (:data:`TICK_S`) reads the workspace's current actions — definitions change at run
time through the admin API — and claims the due checks in the shared results table
(:meth:`~gateway.stores.health.HealthStore.claim_due`): one replica at a time, so several
replicas together run each check once per ``every``. The claimed checks run concurrently; each
result fills its claimed row.

After a scheduled check fails, an action with ``disable_after: N`` whose newest N results all
failed is disabled through ``disable`` (the admin service's, so the change is stored and every
replica sees it) and a warning names the action and its failures. Checks keep running on a
disabled action, so its page shows when the API is back. Nothing a check or the database does
stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from gateway.definitions.actions import HttpAction
from gateway.engine.executor import Executor
from gateway.engine.health import run_check
from gateway.engine.workspace import Workspace
from gateway.stores.health import HealthResult, HealthStore
from gateway.telemetry import metrics

__all__ = ["TICK_S", "HealthScheduler"]

TICK_S = 5.0
"""How often a replica looks for due checks (seconds)."""

logger = logging.getLogger("actiongate.health")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class HealthScheduler:
    """Runs due health checks every tick until closed."""

    def __init__(
        self,
        workspace: Workspace,
        executor: Executor,
        store: HealthStore,
        *,
        disable: Callable[[str], Awaitable[object]] | None = None,
        tick_s: float = TICK_S,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Create the scheduler (not started).

        Args:
            workspace: Where the current actions are read each tick.
            executor: Runs the checks (without its log store).
            store: The shared results table.
            disable: Disables an action by tool name (``disable_after``); None never disables.
            tick_s: Seconds between ticks.
            now: The clock deciding what is due (tests move it by hand).
        """
        self.workspace = workspace
        self.executor = executor
        self.store = store
        self.disable = disable
        self.tick_s = tick_s
        self.now = now
        self._task: asyncio.Task[None] | None = None

    def checked_actions(self) -> dict[str, HttpAction]:
        """The actions that have a health check, by tool name."""
        return {
            name: action
            for name, action in self.workspace.actions.items()
            if isinstance(action, HttpAction) and action.health_check is not None
        }

    async def tick(self) -> dict[str, HealthResult]:
        """Run every due check once; the results by tool name (empty when none ran here)."""
        actions = self.checked_actions()
        intervals = {n: a.health_check.every for n, a in actions.items() if a.health_check}
        claimed = await self.store.claim_due(intervals, self.now())
        if not claimed:
            return {}
        names = list(claimed)
        results = await asyncio.gather(*(self._run(actions[n], claimed[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def _run(self, action: HttpAction, claim_id: int) -> HealthResult:
        try:
            result = await run_check(self.executor, action)
        except Exception as e:  # a bug in one check must not lose the others' results
            logger.exception("health check of action %r failed to run", action.tool_name)
            result = HealthResult(self.now(), False, None, 0.0, type(e).__name__, False)
        await self.store.complete(claim_id, result)
        metrics.health(action.tool_name, result.ok)
        if not result.ok:
            try:
                await self._maybe_disable(action)
            except Exception:
                logger.exception("could not disable action %r", action.tool_name)
        return result

    async def _maybe_disable(self, action: HttpAction) -> None:
        check = action.health_check
        if self.disable is None or check is None or check.disable_after is None:
            return
        current = self.workspace.actions.get(action.tool_name)
        if current is None or not current.enabled:
            return
        recent = await self.store.history(action.tool_name, check.disable_after)
        if len(recent) < check.disable_after or any(r.ok for r in recent):
            return
        await self.disable(action.tool_name)
        logger.warning(
            "action %r disabled: its last %d health checks failed (latest: %s)",
            action.tool_name,
            len(recent),
            recent[0].error or "failed",
        )

    async def run_forever(self) -> None:
        """Tick until cancelled; a failed tick is logged and the next one runs."""
        while True:
            try:
                await self.tick()
            except Exception:
                logger.exception("health checks could not run this tick")
            await asyncio.sleep(self.tick_s)

    def start(self) -> None:
        """Start ticking in the background (the first tick at once)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run_forever(), name="actiongate-health")

    async def close(self) -> None:
        """Stop ticking; a check in flight is cancelled (its claimed row stays unfinished)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
