"""`actiongate test` and `actiongate logs` against a local action API, as a user runs them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli.main import main
from tests.support.action_api import ActionAPI, running_api


@pytest.fixture
async def api() -> AsyncIterator[ActionAPI]:
    async with running_api() as state:
        yield state


def write_config(tmp_path: Path, api: ActionAPI, actions: list[dict[str, Any]]) -> Path:
    config = {
        "database": f"sqlite:///{tmp_path / 'ag.db'}",
        "egress": {"allow": ["127.0.0.1"]},
        "secrets": {"CRM": "crm-SECRET-value-1"},
        "actions": actions,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config).replace("BASE", api.base_url))
    return path


LOOKUP = {
    "name": "Get Customer Account",
    "url": "BASE/echo/customers?email={{lead.email}}",
    "headers": {"Authorization": "Bearer {{secrets.CRM}}"},
}


async def test_test_command_json(
    tmp_path: Path, api: ActionAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, api, [LOOKUP])
    code, out, _ = await _run_in_thread(
        capsys, "test", str(path), "get_customer_account", "--var", "lead.email=a+b@c.d", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert set(result) >= {
        "outcome",
        "request",
        "response",
        "duration_ms",
        "injected_content",
        "log_id",
    }
    assert result["outcome"] == "success"
    assert result["request"]["url"].endswith("/echo/customers?email=a%2Bb%40c.d")
    assert result["request"]["headers"]["Authorization"] == "[REDACTED]"
    assert result["response"]["status_code"] == 200
    assert "<data>" in result["injected_content"]
    assert api.last().headers["Authorization"] == "Bearer crm-SECRET-value-1"

    code, out, _ = await _run_in_thread(capsys, "logs", "--config", str(path), "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 1
    assert lines[0]["id"] == result["log_id"]
    assert lines[0]["action"] == "get_customer_account"
    assert "crm-SECRET-value-1" not in out


async def test_missing_variable_exits_1_and_sends_nothing(
    tmp_path: Path, api: ActionAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, api, [LOOKUP])
    code, out, _ = await _run_in_thread(capsys, "test", str(path), "get_customer_account")
    assert code == 1
    assert "rejected" in out and "lead.email" in out
    assert api.received == []
    code, out, _ = await _run_in_thread(
        capsys, "logs", "--db", f"sqlite:///{tmp_path / 'ag.db'}", "--outcome", "rejected"
    )
    assert code == 0 and "get_customer_account" in out and "rejected" in out


async def test_dry_run_renders_without_sending(
    tmp_path: Path, api: ActionAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    action = {
        "name": "Refund",
        "method": "POST",
        "url": "BASE/echo/refunds",
        "parameters": {"order": {"required": True}},
        "body": {"order": "{{args.order}}"},
    }
    path = write_config(tmp_path, api, [action])
    code, out, err = await _run_in_thread(
        capsys, "test", str(path), "refund", "--arg", "order=A-1", "--dry-run", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["outcome"] == "dry_run" and result["log_id"] is None
    assert result["request"]["body"] == '{"order":"A-1"}'
    assert api.received == [] and err == ""


async def test_live_write_warns(
    tmp_path: Path, api: ActionAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    action = {"name": "Refund", "method": "POST", "url": "BASE/status/500", "body": {"x": 1}}
    path = write_config(tmp_path, api, [action])
    code, out, err = await _run_in_thread(capsys, "test", str(path), "refund")
    assert code == 1  # a 500 is not a pass
    assert "warning: POST runs for real" in err
    assert "http_error" in out and len(api.received) == 1


async def test_unknown_tool_is_a_user_error(
    tmp_path: Path, api: ActionAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, api, [LOOKUP])
    code, _, err = await _run_in_thread(capsys, "test", str(path), "nope")
    assert code == 1 and err.startswith("error: unknown action 'nope'")


async def _run_in_thread(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # The CLI runs its own event loop; keep the test's loop (serving the API) free meanwhile.
    import asyncio

    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err
