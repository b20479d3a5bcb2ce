"""Issue 12, the command line: hostile text in ``logs``, unlogged dry runs, ``serve`` start-up.

Each test sends what a hostile input or a newcomer's first try sends and checks the exact
output, exit status and stored bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml

from gateway.cli.main import main
from gateway.stores.db import migrate
from gateway.stores.engines import create_engine
from gateway.stores.logs import ExecutionRecord, LogStore
from tests.support.action_api import ActionAPI, running_api

ACTIONGATE = Path(sys.executable).parent / "actiongate"
TOKEN_LINE = re.compile(r"generated admin token \(shown once\): (\S+)")


# --- item 16: `logs` escapes what a client or model chose -----------------------------------

HOSTILE_ACTION = "look_up\x1b[2J\x1b[31mfake\nforged\r\u202eevil\x7f"
HOSTILE_CONVERSATION = "c1\n2026-01-01T00:00:00.000000Z  delete_everything  success  \x9b31m\\x1b"


async def _store(url: str, *records: ExecutionRecord) -> None:
    engine = create_engine(url)
    await migrate(engine)
    try:
        async with LogStore(engine) as store:
            for record in records:
                store.submit(record)
    finally:
        await engine.dispose()


def _hostile_record() -> ExecutionRecord:
    return ExecutionRecord(
        action=HOSTILE_ACTION,
        conversation_id=HOSTILE_CONVERSATION,
        request={"method": "GET", "url": "http://api.test/x", "headers": {}, "body": None},
        outcome="rejected",
        error="bad\x1b]0;title\x07",
    )


def test_logs_text_escapes_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ag.db'}"
    record = _hostile_record()
    asyncio.run(_store(url, record))
    assert main(["logs", "--db", url]) == 0
    out = capsys.readouterr().out
    [line] = out.splitlines()  # one record, one line: nothing forged
    assert out == line + "\n"
    assert "look_up\\x1b[2J\\x1b[31mfake\\nforged\\r\\u202eevil\\x7f" in line
    conversation = "conv=c1\\n2026-01-01T00:00:00.000000Z  delete_everything  success  \\x9b31m"
    assert f"{conversation}\\\\x1b  id={record.id}" in line  # a literal backslash is doubled
    assert not [c for c in out if not c.isprintable() and c != "\n"]


def test_logs_json_is_one_line_that_decodes_to_the_stored_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ag.db'}"
    asyncio.run(_store(url, _hostile_record(), _hostile_record()))
    assert main(["logs", "--db", url, "--json"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2 and out.endswith("\n")
    assert not [c for c in out if not c.isprintable() and c != "\n"]
    assert "\\u009b31m" in lines[0] and "\\u202e" in lines[0] and "\\u007f" in lines[0]
    for text in lines:
        data = json.loads(text)
        assert data["action"] == HOSTILE_ACTION
        assert data["conversation_id"] == HOSTILE_CONVERSATION
        assert data["error"] == "bad\x1b]0;title\x07"


# --- item 26: a dry run is never logged ------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[ActionAPI]:
    async with running_api() as state:
        yield state


def _config(tmp_path: Path, actions: list[dict[str, Any]]) -> Path:
    config = {
        "database": f"sqlite:///{tmp_path / 'ag.db'}",
        "egress": {"allow": ["127.0.0.1"]},
        "actions": actions,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def _rows(url: str) -> list[ExecutionRecord]:
    engine = create_engine(url)
    await migrate(engine)
    try:
        records, _ = await LogStore(engine).query(limit=100)
        return records
    finally:
        await engine.dispose()


REFUND: dict[str, Any] = {
    "name": "Refund",
    "method": "POST",
    "url": "BASE/echo/refunds?email={{lead.email}}",
    "parameters": {"order": {"required": True}},
    "body": {"order": "{{args.order}}"},
}


@pytest.mark.parametrize(
    "argv",
    [
        ["--arg", "order=A-1", "--arg", "bogus=1", "--var", "lead.email=a@b.c"],  # unknown arg
        ["--var", "lead.email=a@b.c"],  # a required argument missing
        ["--arg", "order=A-1"],  # a required variable missing
    ],
    ids=["unknown-argument", "missing-argument", "missing-variable"],
)
async def test_refused_dry_run_writes_no_log_record(
    tmp_path: Path, api: ActionAPI, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    action = {**REFUND, "url": REFUND["url"].replace("BASE", api.base_url)}
    path = _config(tmp_path, [action])
    command = ["test", str(path), "refund", "--dry-run", *argv]
    code = await asyncio.to_thread(main, [*command, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["outcome"] == "rejected" and result["log_id"] is None
    code = await asyncio.to_thread(main, command)
    out = capsys.readouterr().out
    assert code == 1
    assert "Outcome:  rejected" in out and out.endswith("Log record: none (dry run)\n")
    assert await _rows(f"sqlite:///{tmp_path / 'ag.db'}") == []
    assert api.received == []


async def test_live_refusal_is_still_logged(
    tmp_path: Path, api: ActionAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    action = {**REFUND, "url": REFUND["url"].replace("BASE", api.base_url)}
    path = _config(tmp_path, [action])
    code = await asyncio.to_thread(
        main, ["test", str(path), "refund", "--arg", "bogus=1", "--var", "lead.email=a@b.c"]
    )
    out = capsys.readouterr().out
    [row] = await _rows(f"sqlite:///{tmp_path / 'ag.db'}")
    assert code == 1 and row.outcome == "rejected" and f"Log record: {row.id}" in out


# --- item 28: `serve` start-up -----------------------------------------------------------------


def _serve_config(tmp_path: Path) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"actions": []}))
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_on_a_busy_port_is_one_line_and_stores_no_token(
    tmp_path: Path,
    busy_port: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ACTIONGATE_ADMIN_TOKEN", raising=False)
    db = tmp_path / "gateway.db"
    argv = ["serve", "--config", str(_serve_config(tmp_path)), "--db", f"sqlite:///{db}"]
    code = main([*argv, "--port", str(busy_port)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err == (
        f"error: cannot listen on 127.0.0.1:{busy_port}: address already in use "
        "(choose another with --port)\n"
    )
    assert not db.exists()  # the app never started: no admin token was generated or stored


def test_serve_with_an_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://bob:pw-SECRET-42@127.0.0.1:1/test"  # nothing listens on port 1
    argv = ["serve", "--config", str(_serve_config(tmp_path)), "--db", url, "--port", "0"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.startswith(
        "error: cannot reach the database postgresql://bob:***@127.0.0.1:1/test: "
    )
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "pw-SECRET-42" not in err and "Traceback" not in err


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """Lines of ``stream`` as they come (``""`` at the end), read on a thread of their own."""
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        with stream:
            for line in stream:
                found.put(line)
        found.put("")

    threading.Thread(target=read, daemon=True).start()
    return found


def test_serve_prints_one_line_once_listening_and_shows_a_new_token(
    tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "gateway.db"
    config = str(_serve_config(tmp_path))
    argv = ["serve", "--config", config, "--db", f"sqlite:///{db}"]
    env = {k: v for k, v in os.environ.items() if k != "ACTIONGATE_ADMIN_TOKEN"}
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("ACTIONGATE_ADMIN_TOKEN", raising=False)
        assert main([*argv, "--port", str(busy_port)]) == 1  # a first try on a busy port
    capsys.readouterr()
    process = subprocess.Popen(
        [str(ACTIONGATE), *argv, "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        out, err = _lines(process.stdout), _lines(process.stderr)
        first = out.get(timeout=30)
        match = re.fullmatch(
            r"actiongate: listening on (http://127\.0\.0\.1:\d+) "
            r"\(OpenAI base URL \1/v1, dashboard \1/\)\n",
            first,
        )
        assert match, first
        # The retried first start generated the token only now, and shows it (stderr).
        shown = err.get(timeout=10)
        [token] = TOKEN_LINE.findall(shown)
        assert shown == (
            "actiongate: no ACTIONGATE_ADMIN_TOKEN set; "
            f"generated admin token (shown once): {token}\n"
        )
        with httpx.Client(base_url=match.group(1), trust_env=False, timeout=10) as client:
            # Listening when the line came, and the token shown is the one stored.
            health = client.get("/healthz")
            assert health.status_code == 200
            assert "server" not in health.headers  # no server software or version given away
            bearer = {"Authorization": f"Bearer {token}"}
            assert client.get("/api/actions", headers=bearer).status_code == 200
            wrong = {"Authorization": f"Bearer {token}x"}
            assert client.get("/api/actions", headers=wrong).status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert out.get(timeout=10) == ""  # nothing after the one line
        assert err.get(timeout=10) == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
