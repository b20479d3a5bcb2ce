"""``serve`` freezes what start-up built out of the garbage collector's reach and collects the
young generation less often (issue 18).

Start-up leaves ~130,000 long-lived objects (modules, validators, table metadata). Walked by
every full collection, they stopped the event loop for 60-75 ms about once a second under load:
the whole p99 tail of ``bench/bench_proxy.py``. Once the server listens they are frozen.
"""

from __future__ import annotations

from gateway.cli.serving import YOUNG_COLLECTION_THRESHOLD
from tests.support.fresh_process import run_script

SERVE_AND_REPORT = """
import gc, socket, uvicorn
from gateway.cli.serving import ReadyServer

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
config = uvicorn.Config(app, log_level="warning", lifespan="on")
def ready():
    print(gc.get_freeze_count(), gc.get_threshold()[0], flush=True)
    server.should_exit = True
print(gc.get_freeze_count(), gc.get_threshold()[0])
server = ReadyServer(config, ready)
server.run(sockets=[sock])
"""


def test_start_up_objects_are_frozen_once_the_server_listens() -> None:
    before, threshold_before, after, threshold = map(int, run_script(SERVE_AND_REPORT).split())
    assert before == 0  # nothing froze them at import
    # The interpreter's own start-up alone is ~20,000 objects; the modules serving imports more.
    assert after > 20_000
    # Young collections: Python's default while starting, the serving one once it listens.
    assert (threshold_before, threshold) == (700, YOUNG_COLLECTION_THRESHOLD)
