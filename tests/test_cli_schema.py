"""`actiongate validate` / `export` on the examples, with snapshots of every export format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adapters import FORMATS
from gateway.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "examples" / "support.yaml"
SNAPSHOTS = Path(__file__).parent / "snapshots"
SECRET_WORDS = ("YOUR_API_KEY", "secrets.", "lead.email", "conversation.id", "CRM_KEY")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", str(SUPPORT))
    assert code == 0
    assert out.strip() == "OK: 6 actions, 1 agent"
    assert "OPENAI_API_KEY" in err  # unset ${VAR} references are warned about


def test_validate_seed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(ROOT / "examples" / "seed_action.json"))
    assert code == 0 and out.strip() == "OK: 1 action, 0 agents"


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_snapshot(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    code, out, _ = run(capsys, "export", str(SUPPORT), "--format", fmt, "--agent", "support")
    assert code == 0
    exported = json.loads(out)
    text = json.dumps(exported)
    for word in SECRET_WORDS:
        assert word not in text, f"{word} leaked into the {fmt} schema"
    snapshot = SNAPSHOTS / f"support.{fmt}.json"
    if os.environ.get("UPDATE_SNAPSHOTS") or not snapshot.exists():
        snapshot.write_text(json.dumps(exported, indent=2, ensure_ascii=False) + "\n")
    assert exported == json.loads(snapshot.read_text())


def test_export_carries_guardrail_and_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "export", str(SUPPORT), "--format", "openai")
    tools = {t["function"]["name"]: t["function"] for t in json.loads(out)}
    assert set(tools) == {
        "get_customer_account",
        "look_up_order",
        "submit_refund",
        "return_request",
        "book_a_demo",
        "start_refund",
    }
    seed = tools["get_customer_account"]
    assert (
        "When NOT to use: Do not use this action if the customer has not provided"
        in (seed["description"])
    )
    assert seed["parameters"]["properties"] == {}
    order = tools["look_up_order"]["parameters"]
    assert order["required"] == ["order_number"]
    refund = tools["submit_refund"]["parameters"]["properties"]
    assert refund["reason"]["enum"] == ["damaged", "missing", "not_as_described"]
    form = tools["return_request"]["parameters"]
    assert form["required"] == [] and set(form["properties"]) == {
        "email",
        "order_number",
        "reason",
        "notes",
    }


def test_export_unknown_agent_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "export", str(SUPPORT), "--format", "openai", "--agent", "x")
    assert code == 1 and out == ""
    assert err.startswith("error: unknown agent 'x'") and err.count("\n") == 1


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", str(SUPPORT), "--format", "nope"])
    assert info.value.code == 2


def test_invalid_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("actions:\n  - name: X\n    url: ftp://h/\n")
    code, _, err = run(capsys, "validate", str(bad))
    assert code == 1
    assert err == (
        f"error: {bad}: line 3: action 'X': url: scheme 'ftp' is not allowed (use http or https)\n"
    )


def test_console_script_installed() -> None:
    import shutil
    import subprocess
    import sys

    exe = shutil.which("actiongate", path=str(Path(sys.executable).parent))
    assert exe is not None, "the actiongate console script is not installed"
    proc = subprocess.run([exe, "validate", str(SUPPORT)], capture_output=True, text=True)
    assert proc.returncode == 0 and "OK: 6 actions" in proc.stdout


def test_import_openapi_prints_a_config_that_loads(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from gateway.definitions.config import parse_config

    spec = str(ROOT / "tests" / "openapi" / "petclinic-3.0.yaml")
    code, out, _ = run(capsys, "import-openapi", spec)
    assert code == 0
    data = yaml.safe_load(out)
    config = parse_config(data, environ={name: "x" * 8 for name in data["secrets"]})
    assert "list_pets" in [a.tool_name for a in config.actions]
    assert "# Skipped operations" in out and "petExists: method HEAD" in out
    code, out, err = run(capsys, "import-openapi", spec, "--operation", "nope")
    assert code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1
