"""Starting a server from the command line: the checks before it, one line once it listens.

``serve`` and ``demo`` bind their listening sockets here before the app starts, so a busy port is
one line naming it (and exit 1) before the app's lifespan has done anything: in particular before
a first start generates and stores the admin token, which it shows only once. ``serve`` also
checks that the database answers, and says so in one line naming the URL with its password
hidden, instead of a traceback from the app's start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import ActionGateError, ConfigError

__all__ = [
    "DATABASE_TIMEOUT_S",
    "JoinedWritesProtocol",
    "ReadyServer",
    "check_database",
    "hidden_url",
    "listen",
    "listen_error",
    "run_server",
    "url_of",
]

DATABASE_TIMEOUT_S = 10.0
"""How long ``serve`` waits for the database to answer before it gives up."""
BACKLOG = 2048  # uvicorn's default


def listen_error(
    host: str, port: int, error: OSError, *, what: str = "", flag: str = ""
) -> ConfigError:
    """The one-line error for a port that cannot be listened on (``flag`` moves it)."""
    where = f"{host}:{port}" + (f" ({what})" if what else "")
    if error.errno == errno.EADDRINUSE:
        hint = f" (choose another with {flag})" if flag else ""
        return ConfigError(f"cannot listen on {where}: address already in use{hint}")
    reason = (error.strerror or str(error)).lower()
    return ConfigError(f"cannot listen on {where}: {reason}")


def listen(host: str, port: int, *, what: str = "", flag: str = "--port") -> socket.socket:
    """A socket listening on ``host:port``, or a one-line :class:`ConfigError` naming them.

    Args:
        host: A host name or IP address (IPv6 without brackets).
        port: The port; 0 picks a free one.
        what: Which server wants the port (``sample API``), named in the error.
        flag: The option that moves it, named in the error when the port is taken.
    """
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise listen_error(host, port, e, what=what) from None
    # A name with both kinds of address (localhost) listens on its IPv4 one, as most clients
    # that try IPv6 first fall back to.
    found.sort(key=lambda info: info[0] != socket.AF_INET)
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a port left in TIME_WAIT by a previous run is reusable, a port
        # another process listens on is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise listen_error(host, port, e, what=what, flag=flag) from None
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a listening socket (the real port when 0 was asked for)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def hidden_url(url: str) -> str:
    """A database URL fit to print: the password (if any) shown as ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        # Unparsable: show no more than the scheme, it may still hold a password.
        scheme = url.partition("://")[0]
        return f"{scheme}://…" if scheme != url else "(the database URL)"


def _reason(error: BaseException, password: str | None) -> str:
    cause = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    lines = str(cause).strip().splitlines()
    text = lines[0] if lines else type(cause).__name__
    if password:
        text = text.replace(password, "***")
    return text


async def _connect(url: str) -> None:
    from gateway.stores.engines import create_engine

    engine = create_engine(url)
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_S), engine.connect():
            pass
    finally:
        await engine.dispose()


def check_database(url: str) -> None:
    """Connect to the database once, or raise a one-line :class:`ConfigError` naming it.

    Raises:
        ConfigError: the URL is not supported, or the database does not answer or refuses.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = hidden_url(url)
    try:
        password = make_url(url).password
    except ArgumentError:  # an unparsable URL is reported by create_engine below
        password = None
    try:
        asyncio.run(_connect(url))
    except ActionGateError:
        raise
    except TimeoutError:
        raise ConfigError(
            f"cannot reach the database {shown}: no answer within {DATABASE_TIMEOUT_S:g} s"
        ) from None
    except Exception as e:  # every driver has its own errors; each is one line here
        reason = _reason(e, None if password is None else str(password))
        raise ConfigError(f"cannot reach the database {shown}: {reason}") from None


class _JoinedWrites:
    """A connection's transport that sends a response's head together with its body.

    uvicorn writes a response's head and its body separately, two system calls per answer,
    and the client then reads twice. A write with nothing held is held until the next write of
    the same event-loop pass, which leaves at once joined to it (a whole response: head and
    body in one write, without waiting); if none comes, it leaves when the pass ends
    (``call_soon``: a stream's head and chunks are not held longer). Closing sends what is held
    first; everything else is the transport's own.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self._flush)
            return
        self._held = None
        if len(data) < _JOIN_BELOW:
            self._transport.write(held + data)
        else:  # no copy of a large body just to save a system call
            self._transport.write(held)
            self._transport.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        # Asked after every response: spelled out rather than found through __getattr__.
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_JOIN_BELOW = 65536
"""Bodies from this size on are written after the held head, not copied onto it."""


class JoinedWritesProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing each response in one system call (_JoinedWrites)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, _JoinedWrites(transport, self.loop)))


class ReadyServer(uvicorn.Server):
    """A uvicorn server that says when it accepts connections (:attr:`ready`, ``on_ready``)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None = None) -> None:
        """Wrap ``config``; ``on_ready`` runs after start-up succeeded, before serving."""
        super().__init__(config)
        self._on_ready = on_ready
        self.ready = asyncio.Event()
        """Set once the app started and the sockets listen."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does (a failed lifespan exits), then report readiness."""
        await super().startup(sockets=sockets)
        _freeze_start_up_heap()
        if self._on_ready is not None:
            self._on_ready()
        self.ready.set()


YOUNG_COLLECTION_THRESHOLD = 5_000
"""Net new container objects between two young collections while serving (Python's is 700)."""


def _freeze_start_up_heap() -> None:
    # What start-up built (modules, pydantic validators, SQLAlchemy's metadata: ~130,000
    # objects) lives as long as the process. Left in the collector's oldest generation, every
    # full collection walks all of it: 60-75 ms with the event loop stopped, about once a second
    # under load, which is the whole p99 tail. Frozen, a full collection walks only what requests
    # made since.
    gc.collect()
    gc.freeze()
    # A request in flight holds a few thousand objects (parsed bodies, frames, futures), so 32 of
    # them cross Python's 700 many times a second although almost nothing they make is cyclic
    # garbage (DEBUG_SAVEALL under bench_proxy's load: ~4,000 objects in 20 s). Young collections
    # then only walk live requests and promote them: 1,356 per 40,000 plain completions at 700;
    # at 5,000 none, and 4 per 20,000 tool loops (20,000 skipped those too and left the garbage
    # to grow the process by ~2.5 MB).
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


@contextlib.contextmanager
def _quiet_signals() -> Iterator[None]:
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal through the
    # handler that was installed before it started; a no-op one lets the process exit 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_server(
    app: Any, sock: socket.socket, *, log_level: str, ready_line: str, log_format: str = "text"
) -> int:
    """Serve ``app`` on ``sock`` until SIGTERM/SIGINT; print ``ready_line`` once it listens.

    Returns:
        0 after a graceful shutdown.

    Raises:
        ConfigError: the app's start-up failed (uvicorn has logged why).
    """

    def ready() -> None:
        sys.stdout.write(ready_line + "\n")
        sys.stdout.flush()

    from gateway.telemetry.logs import uvicorn_config

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
        server_header=False,  # no Server header naming the server software
        http=JoinedWritesProtocol,
        log_config=uvicorn_config("json")
        if log_format == "json"
        else uvicorn.config.LOGGING_CONFIG,
    )
    server = ReadyServer(config, ready)
    try:
        with _quiet_signals():
            server.run(sockets=[sock])
    except SystemExit:
        # uvicorn exits with its start-up failure code when the lifespan fails.
        raise ConfigError("the gateway did not start (the reason is logged above)") from None
    return 0
