"""Optional extras: a missing one is a one-line error naming the extra, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.engine import context
from gateway.extras import MissingExtra
from gateway.stores.engines import create_engine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # "import name" now raises ImportError


def test_postgres_without_asyncpg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _block(monkeypatch, "asyncpg")
    with pytest.raises(MissingExtra) as caught:
        create_engine("postgresql://postgres@127.0.0.1:5432/test")
    assert str(caught.value) == (
        "a PostgreSQL database needs the 'postgres' extra: pip install 'actiongate[postgres]'"
    )


def test_mcp_command_without_the_sdk_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _block(monkeypatch, "mcp")
    code = main(["mcp", str(EXAMPLES / "demo.yaml"), "--agent", "support"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "error: actiongate mcp needs the 'mcp' extra: pip install 'actiongate[mcp]'\n"


def test_sentiment_without_vader_is_neutral_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _block(monkeypatch, "vaderSentiment", "vaderSentiment.vaderSentiment")
    context._analyzer.cache_clear()
    try:
        assert context.classify_sentiment("This is terrible, I am furious!") == "neutral"
        assert context.classify_sentiment("Wonderful, thank you so much!") == "neutral"
    finally:
        context._analyzer.cache_clear()
    warnings = [r.getMessage() for r in caplog.records if r.name == "actiongate.context"]
    assert warnings == [
        "message.sentiment needs the 'sentiment' extra: pip install 'actiongate[sentiment]'; "
        "every message counts as neutral"
    ]
    monkeypatch.undo()  # with VADER back, the same text is classified again
    assert context.classify_sentiment("This is terrible, I am furious!") == "negative"
