"""The README's main command: the offline demo starts, and its scripted tour passes.

Its three ports can be moved (a second demo beside a running one), a taken port is one line
naming it and the option that moves it, and ``--check`` without the openai SDK is one line
naming the extra.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path``, and leave the admin token variable (the demo sets one) as it was."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", "test-demo-token")
    return tmp_path


def test_demo_check_passes_on_ports_of_its_own(tmp_path: Path) -> None:
    exe = shutil.which("actiongate", path=str(Path(sys.executable).parent))
    assert exe is not None
    # Port 0 everywhere: free ports, so this runs beside a demo on 8080/8091/8092.
    ports = ["--port", "0", "--upstream-port", "0", "--api-port", "0"]
    proc = subprocess.run(
        [exe, "demo", "--check", *ports],
        cwd=tmp_path,  # the demo's database lands here, not in the repo
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 6 and all(line.startswith("ok ") for line in lines), proc.stdout
    assert lines[-1].startswith("ok   MCP call, email asked by elicitation: asked 1 question(s)")
    assert '"status":"shipped"' in lines[-1]  # the MCP call ran and returned the order
    assert proc.stderr == ""
    assert (tmp_path / "actiongate-demo.db").exists()


@pytest.mark.parametrize(
    ("flag", "what"),
    [("--port", "gateway"), ("--upstream-port", "scripted model"), ("--api-port", "sample API")],
)
def test_a_taken_demo_port_is_one_line_naming_it(
    in_tmp: Path, busy_port: int, capsys: pytest.CaptureFixture[str], flag: str, what: str
) -> None:
    ports = {"--port": "0", "--upstream-port": "0", "--api-port": "0", flag: str(busy_port)}
    code = main(["demo", "--check", *(item for pair in ports.items() for item in pair)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err == (
        f"error: cannot listen on 127.0.0.1:{busy_port} ({what}): address already in use "
        f"(choose another with {flag})\n"
    )
    assert not (in_tmp / "actiongate-demo.db").exists()  # the gateway never started


def test_demo_check_without_openai_names_the_extra(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # "import openai" now raises ImportError
    code = main(["demo", "--check", "--port", "0", "--upstream-port", "0", "--api-port", "0"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err == (
        "error: actiongate demo --check needs the 'demo' extra: pip install 'actiongate[demo]'\n"
    )
    assert not (in_tmp / "actiongate-demo.db").exists()  # nothing was started
