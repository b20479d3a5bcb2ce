"""Run a test script in a fresh Python process: for what is set once per process (OpenTelemetry's
global providers) or read off ``sys.modules`` (which imports a code path makes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def run_script(source: str, *args: str, timeout_s: float = 120) -> str:
    """``python -c source args...`` from the repository root; its stdout, once it exited 0."""
    done = subprocess.run(
        [sys.executable, "-c", source, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
