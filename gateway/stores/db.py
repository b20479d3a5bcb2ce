"""The schema: column types, table definitions and migrations.

Engines and URLs are :mod:`gateway.stores.engines`; every query here is SQLAlchemy Core, so the
same tables serve SQLite and PostgreSQL.

Migrations follow simonw/llm's ``migrations.py``: :data:`MIGRATIONS` is an append-only list of
functions, each applied once and recorded by name in ``schema_migrations``. Never edit or
reorder a released migration; add a new one and update the current table definitions below.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from datetime import UTC, datetime

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
    false,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeDecorator

from gateway.stores.engines import for_writes
from gateway.stores.hourly_stats import backfill as backfill_hours
from gateway.stores.hourly_stats import define_table as define_execution_hours

__all__ = [
    "MIGRATIONS",
    "Migration",
    "UTCDateTime",
    "actions",
    "agents",
    "conversations",
    "eval_cases",
    "execution_hours",
    "executions",
    "health_results",
    "metadata",
    "migrate",
    "migration",
    "schema_migrations",
    "secrets",
    "stored_responses",
]

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
