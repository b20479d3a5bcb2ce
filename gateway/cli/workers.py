"""``serve --workers N``: N worker processes answering on one listening socket.

The parent binds the socket (so a busy port is still one line before anything starts), checks
the database once, then starts N fresh ``actiongate serve`` interpreters that inherit the
socket (``--worker-fd``) and serve it: the kernel hands each connection to one of them. Fresh
interpreters rather than ``fork``: each imports prometheus-client after
``PROMETHEUS_MULTIPROC_DIR`` is set (the parent sets it to a new directory unless the operator
did), so ``/metrics`` on any worker sums every worker's series; and no event loop, thread or
database connection of the parent is copied into a child.

What the workers share lives in the database: the admin token (stored once, whoever starts
first), dashboard sessions (signed with a key derived from it), definitions (polled), stored
responses, health-check schedules. Limits (rate, concurrency, circuits) are per worker, unless
``limits.redis`` shares them through Redis (:mod:`gateway.engine.redis_limits`).

The parent prints one listening line once every worker is ready, forwards SIGTERM/SIGINT to
them (each drains its requests, as one ``serve`` does) and exits 0 when all did. A worker that
exits on its own stops the rest, and the parent exits 1: the process supervisor restarts the
whole set rather than this one guessing why.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import ConfigError

__all__ = ["READY_PREFIX", "run_workers"]

READY_PREFIX = "actiongate: listening on "
_STARTUP_TIMEOUT_S = 60.0
_EXIT_TIMEOUT_S = 40.0  # a worker drains for up to 30 s (uvicorn's graceful shutdown)


def _worker_command(args: Sequence[str], fd: int) -> list[str]:
    """A worker's command line: these ``serve`` arguments on the inherited socket ``fd``."""
    return [sys.executable, "-m", "gateway.cli.main", *args, "--worker-fd", str(fd)]


def _wait_ready(process: subprocess.Popen[str], deadline: float) -> None:
    """Read the worker's stdout until its listening line; pass anything else through."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(READY_PREFIX):
            return
        sys.stdout.write(line)
        if time.monotonic() > deadline:
            break
    raise ConfigError("a worker did not start (the reason is logged above)")


def _drain_output(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(line)


def _start(argv: Sequence[str], sock: socket.socket, count: int) -> list[subprocess.Popen[str]]:
    fd = sock.fileno()
    command = _worker_command(argv, fd)
    workers = [
        subprocess.Popen(command, pass_fds=(fd,), stdout=subprocess.PIPE, text=True)  # noqa: S603 - our own argv
        for _ in range(count)
    ]
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    try:
        for worker in workers:
            _wait_ready(worker, deadline)
    except BaseException:
        _stop(workers)
        raise
    for worker in workers:  # later output (none by default) still reaches the terminal
        threading.Thread(target=_drain_output, args=(worker,), daemon=True).start()
    return workers


def _stop(workers: Sequence[subprocess.Popen[str]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _mark_dead(workers: Sequence[subprocess.Popen[str]]) -> None:
    """Let live gauges forget the workers that ended (multiprocess mode)."""
    from prometheus_client import multiprocess

    for worker in workers:
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def ensure_metrics_dir() -> Path:
    """``PROMETHEUS_MULTIPROC_DIR``, made now (a fresh directory) unless the operator set it."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix="actiongate-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def run_workers(argv: Sequence[str], sock: socket.socket, count: int, *, ready_line: str) -> int:
    """Serve ``sock`` with ``count`` workers until SIGTERM/SIGINT; the exit status."""
    ensure_metrics_dir()
    stopping = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stopping.set())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        workers = _start(argv, sock, count)
        sys.stdout.write(f"{ready_line} ({count} workers)\n")
        sys.stdout.flush()
        while not stopping.wait(0.2):
            if any(worker.poll() is not None for worker in workers):
                break
        crashed = not stopping.is_set()
        if crashed:
            codes = [w.returncode for w in workers if w.returncode is not None]
            sys.stderr.write(f"actiongate: a worker exited ({codes[0]}); stopping the others\n")
        _stop(workers)
        _mark_dead(workers)
        return 1 if crashed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
