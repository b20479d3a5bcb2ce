"""Assemble the running parts from a config: database, log store, outbound client, executor,
health check results.

The CLI, the proxy and the MCP server all start from :func:`open_runtime`, so every execution
goes through the same guard, client and log whichever door it came in by.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.definitions.config import Config, LimitsConfig
from gateway.engine.executor import Executor
from gateway.engine.limits import ActionLimits, Limits
from gateway.engine.redis_limits import RedisLimits
from gateway.net.egress import EgressPolicy
from gateway.net.outbound import Outbound
from gateway.redaction import Redactor
from gateway.stores.db import migrate
from gateway.stores.engines import create_engine, sqlite_file
from gateway.stores.health import HealthStore
from gateway.stores.log_spill import SPILL_SLOTS, spill_path_for
from gateway.stores.logs import LogStore

__all__ = ["Runtime", "open_limits", "open_runtime"]


@dataclass(slots=True)
class Runtime:
    """The shared parts of one gateway process."""

    config: Config
    engine: AsyncEngine
    logstore: LogStore
    outbound: Outbound
    executor: Executor
    redactor: Redactor
    health: HealthStore
    """Health check results (the scheduler lives in the app, see ``health_schedule``)."""

    async def close(self) -> None:
        """Flush the log and close connections; nothing submitted is lost."""
        await self.outbound.close()
        await self.executor.limits.close()
        await self.logstore.close()
        await self.engine.dispose()


def open_limits(config: LimitsConfig) -> ActionLimits:
    """Limits shared through Redis with ``limits.redis``, else counted in this process.

    Raises:
        MissingExtra: ``limits.redis`` is set but the ``redis`` package is not installed.
    """
    return RedisLimits(config) if config.redis else Limits(config)


async def open_runtime(config: Config, *, database: str | None = None) -> Runtime:
    """Connect to the database (migrating it) and build the executor for ``config``."""
    limits = open_limits(config.limits)  # before connecting: a missing extra is a config error
    pool = config.database_pool
    engine = create_engine(
        database or config.database,
        pool_size=pool.size,
        max_overflow=pool.overflow,
        pool_timeout=pool.timeout_s,
    )
    await migrate(engine)
    redactor = Redactor(v for v in config.secrets.values() if v)
    # With a SQLite file, a flood the writer cannot keep up with spills next to it.
    database_file = sqlite_file(engine)
    spill = None if database_file is None else spill_path_for(database_file)
    # One spill file per process: `serve --workers N` runs N stores on the same database.
    logstore = LogStore(engine, redactor, spill_path=spill, spill_slots=SPILL_SLOTS)
    await logstore.start()
    policy = EgressPolicy(
        config.egress.allow, ports=config.egress.ports, enabled=config.egress.enabled
    )
    outbound = Outbound(policy)
    executor = Executor(
        outbound,
        secrets=config.secrets,
        logstore=logstore,
        redactor=redactor,
        limits=limits,
    )
    return Runtime(config, engine, logstore, outbound, executor, redactor, HealthStore(engine))
