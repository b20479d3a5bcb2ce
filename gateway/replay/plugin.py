"""A pytest plugin for replaying recorded conversations (cassettes) in your own tests.

It is registered by actiongate's ``pytest11`` entry point (``actiongate``); without it, put
``pytest_plugins = ["gateway.replay.plugin"]`` in your top-level ``conftest.py``. Record cassettes
with ``actiongate serve --config actiongate.yaml --record tests/cassettes``, hold a few
conversations, commit the files, then::

    def test_refund_conversation(actiongate_replay):
        report = actiongate_replay("tests/cassettes/refund.jsonl")  # fails with the report
        assert [r.outcome for r in report.records] == ["pending_confirmation", "success"]

A replay runs the gateway in process with the upstream and action APIs answered from the
cassette, so it needs no network and no credentials. It uses the config recorded in the
cassette unless one is given: per call, or for every call with ``--actiongate-config FILE`` or
the ini option ``actiongate_config`` (relative to the rootdir). Pass your current config to see
whether your changes alter what the gateway sends or what the model is given.

Without the fixture: :func:`replay_cassette` (blocking) and :func:`areplay_cassette` (async)
return a :class:`~gateway.replay.run.ReplayReport`; ``report.passed``, ``report.as_text()``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from gateway.definitions.config import Config
    from gateway.replay.run import ReplayReport

__all__ = ["actiongate_replay", "areplay_cassette", "replay_cassette"]


def replay_cassette(
    cassette: str | Path, config: Config | str | Path | None = None, **options: Any
) -> ReplayReport:
    """Replay a cassette and return the report (works inside a running event loop too).

    Args:
        cassette: The cassette file.
        config: A config or config file; default: the one recorded in the cassette.
        **options: Passed to :func:`gateway.replay.run.replay` (``database``).
    """
    from gateway.replay.run import replay_file  # imported late: pytest loads every plugin

    return replay_file(cassette, config, **options)


async def areplay_cassette(
    cassette: str | Path, config: Config | str | Path | None = None, **options: Any
) -> ReplayReport:
    """:func:`replay_cassette` for async tests."""
    from gateway.replay.run import replay

    return await replay(cassette, config, **options)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--actiongate-config FILE`` and the ini option ``actiongate_config``."""
    group = parser.getgroup("actiongate")
    group.addoption(
        "--actiongate-config",
        metavar="FILE",
        default=None,
        help="replay cassettes with this config instead of the recorded one",
    )
    parser.addini("actiongate_config", "config file for cassette replays", default="")


def _default_config(config: pytest.Config) -> Path | None:
    given = config.getoption("--actiongate-config", default=None)
    if given:
        return Path(given)
    try:
        ini = str(config.getini("actiongate_config") or "")
    except ValueError:  # the plugin was registered after the ini options were read
        ini = ""
    return config.rootpath / ini if ini else None


@pytest.fixture
def actiongate_replay(request: pytest.FixtureRequest) -> Callable[..., ReplayReport]:
    """Replay a cassette: ``actiongate_replay(path, config=None, *, check=True)``.

    With ``check`` (the default) a replay that differs fails the test with the full report;
    the report is returned either way, with the stored log rows in ``report.records``.
    """
    default = _default_config(request.config)

    def run(
        cassette: str | Path,
        config: Config | str | Path | None = None,
        *,
        check: bool = True,
        **options: Any,
    ) -> ReplayReport:
        report = replay_cassette(cassette, config if config is not None else default, **options)
        if check and not report.passed:
            pytest.fail(report.as_text(), pytrace=False)
        return report

    return run
