"""The README's main command: the offline demo starts, and its scripted tour passes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.skipif(
    not all(_port_free(p) for p in (8091, 8092)), reason="demo ports 8091/8092 are in use"
)
def test_demo_check_passes(tmp_path: Path) -> None:
    exe = shutil.which("actiongate", path=str(Path(sys.executable).parent))
    assert exe is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [exe, "demo", "--check", "--port", str(port)],
        cwd=tmp_path,  # the demo's database lands here, not in the repo
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("ok ") for line in lines), proc.stdout
    assert (tmp_path / "actiongate-demo.db").exists()
