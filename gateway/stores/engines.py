"""Database URLs and engines: SQLite (the default) or PostgreSQL, through SQLAlchemy's asyncio.

actiongate stores its state in SQLite (``sqlite:///actiongate.db``) or, when several replicas
share it, PostgreSQL. Everything goes through SQLAlchemy Core on an asyncio engine, so the same
queries run on both. The schema and its migrations are :mod:`gateway.stores.db`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Dialect, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.sql.dml import Insert

from gateway.errors import ConfigError
from gateway.extras import require_extra

__all__ = ["create_engine", "database_url", "for_writes", "sqlite_file", "upsert_statement"]

_SQLITE_BEGIN = "actiongate_sqlite_begin"
"""Execution option naming the ``BEGIN`` flavour the SQLite ``begin`` hook emits."""


# --- URLs and engines -----------------------------------------------------------------------


def database_url(url: str) -> str:
    """Normalise a configured database URL to its asyncio driver.

    Args:
        url: ``sqlite:///PATH``, ``sqlite:///:memory:``, ``postgresql://...`` or
            ``postgres://...`` (an explicit ``+aiosqlite`` / ``+asyncpg`` driver is accepted too).

    Returns:
        The URL with the ``sqlite+aiosqlite`` or ``postgresql+asyncpg`` scheme. A libpq-style
        ``sslmode`` query parameter becomes asyncpg's ``ssl``.

    Raises:
        ConfigError: For any other scheme, or a URL that cannot be parsed. The message names the
            scheme only, so a password in the URL is never printed.
    """
    scheme, sep, rest = url.partition("://")
    backend = scheme.split("+", 1)[0].lower()
    if not sep:
        raise ConfigError(
            "database URL has no scheme; use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    if backend == "sqlite":
        normalized = f"sqlite+aiosqlite://{rest}"
    elif backend in ("postgresql", "postgres"):
        normalized = f"postgresql+asyncpg://{rest}"
    else:
        raise ConfigError(
            f"unsupported database URL scheme {scheme!r}; "
            "use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    try:
        parsed = make_url(normalized)
    except ArgumentError as e:
        raise ConfigError(f"cannot parse the {backend} database URL") from e
    if backend == "sqlite" or "sslmode" not in parsed.query:
        return normalized
    # asyncpg takes the libpq modes (require, verify-full, ...) under the name `ssl`.
    query = dict(parsed.query)
    query["ssl"] = query.pop("sslmode")
    return parsed.set(query=query).render_as_string(hide_password=False)


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def create_engine(
    url: str,
    *,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    pool_timeout: float | None = None,
    **options: Any,
) -> AsyncEngine:
    """Create the asyncio engine for a configured database URL.

    SQLite connections get ``journal_mode=WAL`` (file databases only) so readers never block the
    log writer, ``synchronous=NORMAL`` (durable with WAL, far fewer fsyncs), a 5 s
    ``busy_timeout`` and ``foreign_keys=ON``. SQLAlchemy, not the driver, emits ``BEGIN``, which
    makes DDL transactional and lets :func:`for_writes` ask for ``BEGIN IMMEDIATE``.

    A ``:memory:`` database lives in a single connection that coroutines take turns on (a
    coroutine must not hold two connections at once there).

    PostgreSQL engines pre-ping pooled connections (a replica survives a database restart) and
    recycle them after 30 minutes; ``pool_size``, ``max_overflow`` and ``pool_timeout`` (the
    config's ``database_pool``; 5, 10 and 10 s by default) size their pool, and a file
    SQLite database's when given. A ``:memory:`` database keeps its single connection.

    Args:
        url: Any URL :func:`database_url` accepts.
        **options: Passed to :func:`sqlalchemy.ext.asyncio.create_async_engine`, overriding the
            defaults above (``connect_args`` is merged).

    Returns:
        The engine; the caller disposes of it.

    Raises:
        ConfigError: If the URL is not supported.
    """
    parsed = make_url(database_url(url))
    # Statement parameters can hold secrets (the secrets table) and make error logs huge.
    settings: dict[str, Any] = {"hide_parameters": True}
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        require_extra("asyncpg", "postgres", "a PostgreSQL database")
        settings.update(pool_pre_ping=True, pool_recycle=1800)
        settings.update(pool_size=5, max_overflow=10, pool_timeout=10.0)
        connect_args["timeout"] = 10  # seconds to connect; asyncpg's default is 60
    elif _is_memory(parsed):
        # Every connection to :memory: is a new, empty database, and SQLAlchemy's default
        # (one connection shared by all coroutines at once) lets their transactions collide.
        # One pooled connection, handed to one coroutine at a time, avoids both.
        settings.update(poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0)
    if not _is_memory(parsed):  # :memory: lives in its one connection
        sizing = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout,
        }
        settings.update((k, v) for k, v in sizing.items() if v is not None)
    connect_args.update(options.pop("connect_args", {}))
    settings.update(options)
    engine = create_async_engine(parsed, connect_args=connect_args, **settings)
    if parsed.get_backend_name() == "sqlite":
        _install_sqlite_hooks(engine, memory=_is_memory(parsed))
    return engine


def sqlite_file(engine: AsyncEngine) -> Path | None:
    """The file of a SQLite database (where its data lives), or None: PostgreSQL, ``:memory:``.

    Args:
        engine: An engine from :func:`create_engine`.
    """
    url = engine.url
    if url.get_backend_name() != "sqlite" or _is_memory(url) or not url.database:
        return None
    return Path(url.database).absolute()


def _enable_wal(cursor: Any) -> None:
    """Switch a database file to WAL (a persistent setting) unless it already is.

    The switch needs an exclusive lock and answers "database is locked" at once, without the
    busy handler, when several connections open a new file together; so retry briefly.
    """
    for attempt in range(50):
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as e:  # the driver's OperationalError, under whichever adapter
            if "locked" not in str(e) or attempt == 49:
                raise
            time.sleep(0.02)


def _install_sqlite_hooks(engine: AsyncEngine, *, memory: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The sqlite3 module would otherwise BEGIN only before DML and auto-commit DDL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout=5000")
            if not memory:
                _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        flavour = connection.get_execution_options().get(_SQLITE_BEGIN, "")
        connection.exec_driver_sql(f"BEGIN {flavour}".rstrip())


def for_writes(engine: AsyncEngine) -> AsyncEngine:
    """A view of ``engine`` (same pool) whose SQLite transactions take the write lock at once.

    A deferred SQLite transaction that reads and then writes can fail with "database is locked"
    without waiting for ``busy_timeout``; ``BEGIN IMMEDIATE`` waits instead. No effect on
    PostgreSQL.

    Args:
        engine: An engine from :func:`create_engine`.

    Returns:
        The engine view to use for read-modify-write transactions.
    """
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})


def upsert_statement(table: Table, dialect: Dialect, *, adding: bool = False) -> Insert:
    """``INSERT .. ON CONFLICT (primary key) DO UPDATE`` setting every other column.

    Args:
        table: A table with a primary key.
        dialect: The engine's dialect (``sqlite`` or ``postgresql``).
        adding: Add each value to the stored one instead of replacing it (a table of counters,
            such as ``execution_hours``): one atomic statement however many writers there are.

    Returns:
        A statement for ``execute(statement, rows)``; several rows in one call must not share a
        key (PostgreSQL refuses to update one row twice in a statement).
    """
    make_insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    statement = make_insert(table)
    keys = [column.name for column in table.primary_key]
    updates = {
        c.name: c + statement.excluded[c.name] if adding else statement.excluded[c.name]
        for c in table.columns
        if c.name not in keys
    }
    return statement.on_conflict_do_update(index_elements=keys, set_=updates)
