#!/usr/bin/env python3
"""One entry point for routine tasks; needs only Python 3.11+ (stdlib) to start.

    python3 scripts/dev.py demo     # offline demo on the embedded defaults
    python3 scripts/dev.py test     # install what tests need, then run them
    python3 scripts/dev.py lint     # ruff, mypy --strict, the import layer contracts
    python3 scripts/dev.py bench    # benchmarks in bench/
    python3 scripts/dev.py conformance  # the official MCP conformance suite (needs npm)

Everything is installed into ./.venv; the install is repeated only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def run(*cmd: str | Path, check: bool = True, env: dict[str, str] | None = None) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)
    if check and code != 0:
        sys.exit(code)
    return code


def ensure_venv(extras: str) -> None:
    """Create .venv and install the project with ``extras`` unless already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036 - run by whatever python3 the user has
        sys.exit("actiongate needs Python 3.11 or newer")
    if not PY.exists():
        run(sys.executable, "-m", "venv", VENV)
    stamp = VENV / f".installed-{extras or 'base'}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    target = f".[{extras}]" if extras else "."
    run(PY, "-m", "pip", "install", "--quiet", "-e", target)
    stamp.write_text(digest)


def ensure_chromium() -> None:
    """Install Debian's chromium for the browser tests when it is missing (needs root/apt)."""
    if shutil.which("chromium"):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        run("apt-get", "update", "-qq")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "install", "-y", "-qq", "chromium", "chromium-driver", env=env)
    else:
        print("chromium not found and cannot be installed here: browser tests will be skipped")


BROWSER_TESTS = ROOT / "tests" / "browser"


def ensure_axe() -> None:
    """Install the pinned axe-core for the accessibility tests (npm ci, when the lock changes).

    Without npm the accessibility tests skip (and fail in CI, which needs them).
    """
    lock = BROWSER_TESTS / "package-lock.json"
    modules = BROWSER_TESTS / "node_modules"
    stamp = modules / ".installed-lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not shutil.which("npm"):
        print("npm not found: axe-core cannot be installed, accessibility tests will be skipped")
        return
    run("npm", "ci", "--no-audit", "--no-fund", "--prefix", BROWSER_TESTS)
    stamp.write_text(digest)


def cmd_demo(args: list[str]) -> None:
    ensure_venv("all")
    os.execv(str(BIN / "actiongate"), [str(BIN / "actiongate"), "demo", *args])


def cmd_test(args: list[str]) -> None:
    ensure_venv("test")
    if BROWSER_TESTS.exists():
        ensure_chromium()
        ensure_axe()
    code = run(PY, "-m", "pytest", *args, check=False)
    if code == 5:
        sys.exit("pytest collected no tests: that is a failure, not a pass")
    sys.exit(code)


def cmd_lint(args: list[str]) -> None:
    ensure_venv("test")
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")
    run(BIN / "mypy")
    run(BIN / "lint-imports")  # the layer contracts in pyproject.toml


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cmd_conformance(args: list[str]) -> None:
    """The official MCP conformance suite against ``/mcp/support`` of a real ``serve``.

    Scenarios that only the SDKs' "everything" test server can pass are listed, each with its
    reason, in tests/mcp_conformance/baseline.yml; any other failure, or a listed scenario that
    now passes, fails the run.
    """
    import tempfile
    import time
    import urllib.request

    ensure_venv("test")
    suite = ROOT / "tests" / "mcp_conformance"
    tool = suite / "node_modules" / ".bin" / "conformance"
    if not tool.exists():
        run("npm", "install", "--no-package-lock", "--no-audit", "--no-fund", "--prefix", suite)
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ACTIONGATE_ADMIN_TOKEN": "conformance-admin-token"}
        serve = subprocess.Popen(
            [
                BIN / "actiongate",
                "serve",
                "--config",
                "examples/demo.yaml",
                "--port",
                str(port),
                "--db",
                f"sqlite:///{tmp}/conformance.db",
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            code = run(
                tool,
                "server",
                "--url",
                f"http://127.0.0.1:{port}/mcp/support",
                "--expected-failures",
                suite / "baseline.yml",
                *args,
                check=False,
            )
        finally:
            serve.terminate()
            try:
                # serve drains open connections for up to 30 s (uvicorn's graceful shutdown), then
                # closes the app: a process still there well after that is stuck.
                serve.wait(timeout=45)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
                sys.exit("actiongate serve did not exit within 45 s of SIGTERM")
    sys.exit(code)


def cmd_bench(args: list[str]) -> None:
    ensure_venv("test")
    for script in sorted((ROOT / "bench").glob("bench_*.py")):
        run(PY, script, *args)


COMMANDS = {
    "demo": cmd_demo,
    "test": cmd_test,
    "lint": cmd_lint,
    "bench": cmd_bench,
    "conformance": cmd_conformance,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 scripts/dev.py {{{'|'.join(COMMANDS)}}} [args...]")
    COMMANDS[sys.argv[1]](sys.argv[2:])
