"""Database URLs, engines, table definitions and schema migrations.

actiongate stores its state in SQLite (the default, ``sqlite:///actiongate.db``) or, when
several replicas share it, PostgreSQL. Everything goes through SQLAlchemy Core on an asyncio
engine, so the same queries run on both.

Migrations follow simonw/llm's ``migrations.py``: :data:`MIGRATIONS` is an append-only list of
functions, each applied once and recorded by name in ``schema_migrations``. Never edit or
reorder a released migration; add a new one and update the current table definitions below.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    false,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator

from gateway.errors import ConfigError
from gateway.extras import require_extra
from gateway.stores.hourly_stats import backfill as backfill_hours
from gateway.stores.hourly_stats import define_table as define_execution_hours

__all__ = [
    "MIGRATIONS",
    "Migration",
    "UTCDateTime",
    "actions",
    "agents",
    "conversations",
    "create_engine",
    "database_url",
    "eval_cases",
    "execution_hours",
    "executions",
    "for_writes",
    "health_results",
    "metadata",
    "migrate",
    "migration",
    "schema_migrations",
    "secrets",
    "sqlite_file",
    "stored_responses",
    "upsert_statement",
]

"""The database used when none is configured: ``actiongate.db`` in the working directory."""

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


def upsert_statement(table: Table, dialect: Dialect) -> Insert:
    """``INSERT .. ON CONFLICT (primary key) DO UPDATE`` setting every other column.

    Args:
        table: A table with a primary key.
        dialect: The engine's dialect (``sqlite`` or ``postgresql``).

    Returns:
        A statement for ``execute(statement, rows)``; several rows in one call must not share a
        key (PostgreSQL refuses to update one row twice in a statement).
    """
    make_insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    statement = make_insert(table)
    keys = [column.name for column in table.primary_key]
    updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
    return statement.on_conflict_do_update(index_elements=keys, set_=updates)


# --- Column types and tables ----------------------------------------------------------------


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones, so values are stored as UTC in
    SQLAlchemy's fixed-width text format, which sorts chronologically. Naive datetimes are taken
    to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC (and, for SQLite, drop the offset it cannot store)."""
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _define_tables_v1(meta: MetaData) -> None:
    """The schema of migration 1, kept frozen so a fresh database replays history exactly."""
    Table(
        "executions",
        meta,
        Column("id", String(36), primary_key=True),
        Column("timestamp", UTCDateTime(), nullable=False),
        Column("agent_id", String(255)),
        Column("conversation_id", String(255)),
        Column("action", String(255), nullable=False),
        Column("tool_call_id", String(255)),
        Column("request", Text, nullable=False),  # JSON {method, url, headers, body}
        Column("response", Text),  # JSON {status_code, body, truncated}
        Column("duration_ms", Float, nullable=False),
        Column("outcome", String(32), nullable=False),
        Column("error", Text),
        Column("injected", Boolean, nullable=False, server_default=false()),
        Column("injected_content", Text),
        # Each filter index ends in (timestamp, id), so a filtered newest-first page is a single
        # index range scan with no sort, however many rows match.
        Index("ix_executions_timestamp_id", "timestamp", "id"),
        Index("ix_executions_action", "action", "timestamp", "id"),
        Index("ix_executions_agent_id", "agent_id", "timestamp", "id"),
        Index("ix_executions_conversation_id", "conversation_id", "timestamp", "id"),
        Index("ix_executions_outcome", "outcome", "timestamp", "id"),
    )
    Table(
        "conversations",
        meta,
        Column("id", String(255), primary_key=True),
        Column("agent_id", String(255)),
        Column("state", Text, nullable=False, server_default="{}"),  # JSON: captured lead etc.
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Index("ix_conversations_updated_at", "updated_at"),
    )
    Table(
        "actions",
        meta,
        Column("tool_name", String(64), primary_key=True),
        Column("definition", Text, nullable=False),  # JSON, in the file format
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    Table(
        "agents",
        meta,
        Column("id", String(255), primary_key=True),
        Column("definition", Text, nullable=False),  # JSON, an `agents:` entry of the config
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    Table(
        "secrets",
        meta,
        Column("name", String(255), primary_key=True),
        Column("value", Text, nullable=False),  # encrypted by the secret store, never plain
        Column("updated_at", UTCDateTime(), nullable=False),
    )


def _define_conversations_v2(meta: MetaData) -> None:
    """The ``conversations`` table of migration 2: a conversation belongs to its agent.

    Kept frozen like :func:`_define_tables_v1`; the key is ``(agent_id, id)``, so the same
    ``conversation.id`` on two agents names two conversations.
    """
    Table(
        "conversations",
        meta,
        Column("agent_id", String(255), primary_key=True),
        Column("id", String(255), primary_key=True),
        Column("state", Text, nullable=False, server_default="{}"),  # JSON: captured lead etc.
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Index("ix_conversations_updated_at", "updated_at"),
    )


def _define_responses_v3(meta: MetaData) -> None:
    """The ``responses`` table of migration 3: Responses API answers kept for
    ``previous_response_id``, keyed like conversations by ``(agent_id, id)``."""
    Table(
        "responses",
        meta,
        Column("agent_id", String(255), primary_key=True),
        Column("id", String(64), primary_key=True),
        Column("conversation_id", String(255), nullable=False),
        Column("items", Text, nullable=False),  # JSON: the conversation's messages so far
        Column("created_at", UTCDateTime(), nullable=False),
        Index("ix_responses_created_at", "created_at"),
    )


def _define_health_results_v4(meta: MetaData) -> None:
    """The ``health_results`` table of migration 4: scheduled checks per action, apart from the
    execution log. ``ok`` is NULL while a replica that claimed the check is still running it."""
    Table(
        "health_results",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("tool_name", String(64), nullable=False),
        Column("time", UTCDateTime(), nullable=False),  # when the check started
        Column("ok", Boolean),
        Column("status_code", Integer),
        Column("duration_ms", Float),
        Column("error", Text),
        Column("dry", Boolean, nullable=False, server_default=false()),
        Index("ix_health_results_tool_time", "tool_name", "time", "id"),
    )


def _conversation_version_v5() -> Column[int]:
    """The ``version`` column migration 5 adds to ``conversations``: the writes a row has had.

    A save writes only if the row is still at the version it read (see
    :mod:`gateway.stores.conversations`); rows from before it start at 1.
    """
    return Column("version", Integer, nullable=False, server_default="1")


def _define_eval_cases_v7(meta: MetaData) -> None:
    """The ``eval_cases`` table of migration 7: each action's guardrail check cases.

    One row per action holding its whole list (JSON), replaced as a whole by every save, as the
    dashboard and ``PUT /api/actions/{tool_name}/eval-cases`` edit the list together.
    """
    Table(
        "eval_cases",
        meta,
        Column("tool_name", String(64), primary_key=True),
        Column("cases", Text, nullable=False),  # JSON: a list of action cases
        Column("updated_at", UTCDateTime(), nullable=False),
    )


metadata = MetaData()
"""The current schema: migration 1's tables plus every later migration's changes."""

_define_tables_v1(metadata)
# When a migration changes a table, mirror the change here (e.g. ``append_column``).
metadata.remove(metadata.tables["conversations"])
_define_conversations_v2(metadata)  # m002_conversations_per_agent
_define_responses_v3(metadata)  # m003_stored_responses
_define_health_results_v4(metadata)  # m004_health_results
metadata.tables["conversations"].append_column(_conversation_version_v5())  # m005
define_execution_hours(metadata, UTCDateTime())  # m006_execution_hours
_define_eval_cases_v7(metadata)  # m007_eval_cases

executions = metadata.tables["executions"]
conversations = metadata.tables["conversations"]
actions = metadata.tables["actions"]
agents = metadata.tables["agents"]
secrets = metadata.tables["secrets"]
stored_responses = metadata.tables["responses"]
health_results = metadata.tables["health_results"]
eval_cases = metadata.tables["eval_cases"]
execution_hours = metadata.tables["execution_hours"]

schema_migrations = Table(
    "schema_migrations",
    MetaData(),
    Column("name", String(255), primary_key=True),
    Column("applied_at", UTCDateTime(), nullable=False),
)


# --- Migrations -----------------------------------------------------------------------------

Migration = Callable[[Connection], None]
"""A migration: runs synchronously inside the migration transaction."""

MIGRATIONS: list[Migration] = []
"""Every migration in order. Append only: a released migration is never edited or removed."""


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration; its ``__name__`` is what gets recorded."""
    if any(existing.__name__ == fn.__name__ for existing in MIGRATIONS):
        raise ValueError(f"duplicate migration name {fn.__name__!r}")
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(connection: Connection) -> None:
    """Executions log, conversation state, admin-managed actions and agents, secrets."""
    frozen = MetaData()
    _define_tables_v1(frozen)
    frozen.create_all(connection)


@migration
def m002_conversations_per_agent(connection: Connection) -> None:
    """Key conversations by ``(agent_id, id)`` instead of ``id`` alone.

    A row keeps the agent that last saved it (every save wrote its agent's id), so an existing
    conversation continues on that agent and starts afresh on any other. A row without an agent
    could belong to anyone and is dropped rather than guessed at. The table is copied aside and
    rebuilt, the one way to change a primary key that SQLite and PostgreSQL share.
    """
    connection.execute(
        text(
            "CREATE TABLE conversations_m002 AS SELECT agent_id, id, state, created_at, updated_at"
            " FROM conversations WHERE agent_id IS NOT NULL"
        )
    )
    connection.execute(text("DROP TABLE conversations"))  # its index and key go with it
    frozen = MetaData()
    _define_conversations_v2(frozen)
    frozen.create_all(connection)
    connection.execute(
        text(
            "INSERT INTO conversations (agent_id, id, state, created_at, updated_at)"
            " SELECT agent_id, id, state, created_at, updated_at FROM conversations_m002"
        )
    )
    connection.execute(text("DROP TABLE conversations_m002"))


@migration
def m003_stored_responses(connection: Connection) -> None:
    """Stored Responses API answers (``POST /v1/responses`` with ``store``)."""
    frozen = MetaData()
    _define_responses_v3(frozen)
    frozen.create_all(connection)


@migration
def m004_health_results(connection: Connection) -> None:
    """Results of the scheduled health checks of actions (``health_check``)."""
    frozen = MetaData()
    _define_health_results_v4(frozen)
    frozen.create_all(connection)


@migration
def m005_conversation_versions(connection: Connection) -> None:
    """Number each conversation row's writes, so concurrent saves merge instead of overwriting.

    ``ADD COLUMN`` with a constant default keeps every row (SQLite and PostgreSQL alike).
    """
    # The same column as _conversation_version_v5, spelled out: frozen with this migration.
    connection.execute(
        text("ALTER TABLE conversations ADD COLUMN version INTEGER NOT NULL DEFAULT 1")
    )


@migration
def m006_execution_hours(connection: Connection) -> None:
    """The log summed per hour, agent and action, for the Overview (``hourly_stats``).

    Filled from the records already stored, in this transaction; the log writer keeps it up
    to date from then on.
    """
    frozen = MetaData()
    hours = define_execution_hours(frozen, UTCDateTime())
    hours.create(connection)
    backfill_hours(connection, executions, hours)


@migration
def m007_eval_cases(connection: Connection) -> None:
    """The guardrail check cases of each action (the dashboard's Guardrail check tab)."""
    frozen = MetaData()
    _define_eval_cases_v7(frozen)
    frozen.create_all(connection)


# Any constant works; it only has to differ from other applications' advisory locks.
_LOCK_KEY = zlib.crc32(b"actiongate.migrate") & 0x7FFFFFFF


async def migrate(engine: AsyncEngine) -> list[str]:
    """Apply every migration the database has not seen yet, in one transaction.

    Safe when several replicas start at once: on PostgreSQL a transaction-scoped advisory lock
    (per schema) serialises them, and SQLite's ``BEGIN IMMEDIATE`` does the same. The second
    replica then finds everything applied and does nothing.

    Args:
        engine: An engine from :func:`create_engine`.

    Returns:
        The names of the migrations applied now (empty when the schema was up to date).
    """
    async with for_writes(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key, hashtext(current_schema()))"),
                {"key": _LOCK_KEY},
            )
        return await connection.run_sync(_apply_missing)


def _apply_missing(connection: Connection) -> list[str]:
    schema_migrations.create(connection, checkfirst=True)
    applied = set(connection.scalars(select(schema_migrations.c.name)))
    newly_applied: list[str] = []
    for fn in MIGRATIONS:
        if fn.__name__ in applied:
            continue
        fn(connection)
        connection.execute(
            insert(schema_migrations).values(name=fn.__name__, applied_at=datetime.now(UTC))
        )
        newly_applied.append(fn.__name__)
    return newly_applied
