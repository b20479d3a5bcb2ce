"""Shared fixtures.

Databases: ``database`` runs a test once on SQLite (a file in ``tmp_path``) and once on
PostgreSQL (marked ``postgres``), each time on an empty database: PostgreSQL tests get a schema
of their own, so parallel runs never collide. ``db_engine`` is the same, already migrated.

PostgreSQL comes from ``ACTIONGATE_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it is unreachable the PostgreSQL tests are
skipped, unless both ``CI`` and ``ACTIONGATE_REQUIRE_PG`` are set, which makes them fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.stores.db import migrate
from gateway.stores.engines import create_engine

pytest_plugins = ["pytester"]  # tests of the pytest plugins run pytest in a subprocess

PG_ENV = "ACTIONGATE_TEST_PG"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Database:
    """An empty test database; :meth:`engine` makes engines that see only it."""

    kind: Literal["sqlite", "postgres"]
    url: str
    schema: str | None = None
    path: Path | None = None
    engines: list[AsyncEngine] = field(default_factory=list)

    def engine(self, url: str | None = None, **options: Any) -> AsyncEngine:
        """A new engine on this database (``url`` may point at the same server another way)."""
        if self.schema is not None:
            settings = {"server_settings": {"search_path": self.schema}}
            options["connect_args"] = settings | options.get("connect_args", {})
        engine = create_engine(url or self.url, **options)
        self.engines.append(engine)
        return engine

    async def dispose(self) -> None:
        """Dispose of every engine made by :meth:`engine`."""
        for engine in self.engines:
            await engine.dispose()


def _probe_postgres(url: str) -> str | None:
    """Why PostgreSQL at ``url`` cannot be used, or None when it can."""

    async def connect() -> None:
        engine = create_engine(url, connect_args={"timeout": 3})
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    # Fixtures may be set up while an event loop runs; probe on a loop of our own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pool.submit(asyncio.run, connect()).result()
        except Exception as e:
            return f"{type(e).__name__}: {e}"
    return None


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL URL to test against; skips (or, in CI if required, fails) without one."""
    url = os.environ.get(PG_ENV, DEFAULT_PG_URL)
    problem = _probe_postgres(url)
    if problem is not None:
        parsed = make_url(url)
        reason = f"PostgreSQL at {parsed.host}:{parsed.port or 5432} unreachable ({problem})"
        if os.environ.get("CI") and os.environ.get("ACTIONGATE_REQUIRE_PG"):
            pytest.fail(f"{reason}; ACTIONGATE_REQUIRE_PG is set")
        pytest.skip(f"{reason}; set {PG_ENV} to test PostgreSQL")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database, once SQLite and once PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "actiongate.db"
        db = Database("sqlite", f"sqlite:///{path}", path=path)
        yield db
        await db.dispose()
        return
    url = request.getfixturevalue("pg_url")
    schema = f"actiongate_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(url)
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        db = Database("postgres", url, schema=schema)
        try:
            yield db
        finally:
            await db.dispose()
            async with admin.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        await admin.dispose()


@pytest.fixture
async def db_engine(database: Database) -> AsyncEngine:
    """A migrated engine on :func:`database`."""
    engine = database.engine()
    await migrate(engine)
    return engine
