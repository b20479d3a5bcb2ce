"""``database_pool``: each process's PostgreSQL pool is sized by the config, validated at load."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.definitions.config import parse_config
from gateway.engine.runtime import open_runtime
from gateway.errors import ConfigError
from gateway.stores.engines import create_engine


def test_the_pool_is_sized_as_configured() -> None:
    engine = create_engine(
        "postgresql://nobody@127.0.0.1:1/none", pool_size=3, max_overflow=7, pool_timeout=2.5
    )
    pool = engine.sync_engine.pool
    assert pool.size() == 3  # type: ignore[attr-defined]
    assert pool._max_overflow == 7  # type: ignore[attr-defined]
    assert pool._timeout == 2.5  # type: ignore[attr-defined]
    sqlite = create_engine("sqlite:///:memory:", pool_size=50)
    assert sqlite.sync_engine.pool.size() == 1  # type: ignore[attr-defined]  # one connection, always


@pytest.mark.parametrize(
    ("pool", "field"),
    [
        ({"size": 0}, "size"),
        ({"overflow": -1}, "overflow"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"sizes": 3}, "sizes"),
    ],
)
def test_a_bad_pool_setting_is_refused_naming_it(pool: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"database_pool.{field}"):
        parse_config({"database_pool": pool}, environ={})


async def test_the_runtime_passes_the_configured_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.engine.runtime as runtime_module

    seen: dict[str, object] = {}

    def spy(url: str, **options: object) -> AsyncEngine:
        seen.update(options)
        return create_engine(url, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime_module, "create_engine", spy)
    config = parse_config(
        {
            "database": f"sqlite:///{tmp_path / 'pool.db'}",
            "database_pool": {"size": 2, "overflow": 1, "timeout_s": 4},
        },
        environ={},
    )
    runtime = await open_runtime(config)
    await runtime.close()
    assert seen == {"pool_size": 2, "max_overflow": 1, "pool_timeout": 4.0}
