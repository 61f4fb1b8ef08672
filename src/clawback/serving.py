"""Running ASGI apps: in the foreground for ``clawback serve``/``simulate``, or on a background thread
for the demo, the savings benchmark and the tests (a real server on a real port, not an in-memory
transport, so that what is measured is what users get).

The server is uvicorn with uvloop and httptools. An app may name its own HTTP protocol class in an
``http_protocol`` attribute: the gateway's (``GatewayApp.http_protocol``) is the same httptools protocol with the
writes of one loop turn sent as one (``clawback.write_coalescing``: a response's head and body in one system
call). Every other app, the simulator included, is served by plain httptools, as before.

Granian (a Rust HTTP server, ASGI interface, uvloop, 1 worker) was measured in its place for the gateway, same
app, same simulator, side by side (issue 19, 2026-12-04, ``benchmarks/README.md``): CPU per request at 32
connections +39 % plain / +63 % streams (460 / 638 us against uvicorn's 330 / 391), +13-54 % with its
single-threaded runtime or its Rust task implementation, and a higher p50 at one connection (0.73 against
0.48 ms): every ASGI message crosses from its Rust threads to the Python loop, and a proxy sends several per
request. Not used.
"""

from __future__ import annotations

import gc
import socket
import sys
import threading
import time
from typing import Any

import uvicorn

__all__ = ["GATEWAY_GC_THRESHOLD", "BackgroundServer", "free_port", "run_app", "run_workers", "tune_process"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    # uvloop + httptools: the fastest pure-Python-stack combination measured (docs/performance.md).
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=options.pop("http", getattr(app, "http_protocol", "httptools")),
        log_level=options.pop("log_level", "warning"),
        access_log=False,
        lifespan=options.pop("lifespan", "on"),
        **options,
    )


#: How long a thread may hold the GIL before Python hands it over (the default is 5 ms).
SWITCH_INTERVAL_S = 0.0005

#: The gateway's collector thresholds (Python's default: 700, 10, 10). A request leaves no cyclic garbage behind
#: (``gc.DEBUG_SAVEALL`` over 20,000 requests found only start-up objects), yet at 32 connections the objects
#: of the requests in flight pushed the young generation past 700 several times per request: 1,368 young, 125
#: middle and 10 full collections in ~12,000 requests, ~39 us of CPU per request spent finding nothing
#: (``gc.callbacks``; issue 19, ``benchmarks/README.md``). At 10,000 a young collection is rarer and, with
#: nothing to free, only longer in proportion.
GATEWAY_GC_THRESHOLD = (10_000, 20, 100)


def tune_process(gc_threshold: tuple[int, int, int] | None = None) -> None:
    """Tune this process for serving: a short GIL switch interval, the collector's thresholds, ``gc.freeze()``.

    The gateway writes its ledger from a background thread; with Python's default 5 ms switch interval that
    thread could keep the event loop waiting for the GIL for milliseconds, which was most of the exact-cache
    hit p99 (``docs/performance.md``). ``gc.freeze()`` moves everything built at start-up (price table, app,
    models) out of the collector's way, so full collections scan only request garbage. ``gc_threshold``: the
    gateway's (``GATEWAY_GC_THRESHOLD``); None keeps Python's (the simulator, so that the upstream the
    benchmarks compare against is unchanged).
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if gc_threshold is not None:
        gc.set_threshold(*gc_threshold)
    gc.freeze()


def run_app(app: Any, host: str, port: int, gc_threshold: tuple[int, int, int] | None = None, **options: Any) -> None:
    """Serve until interrupted, with the process tuned for latency (``tune_process``)."""
    tune_process(gc_threshold)
    uvicorn.Server(_config(app, host, port, **options)).run()


def run_workers(factory: str, host: str, port: int, workers: int, http: Any = "httptools", **options: Any) -> None:
    """Serve ``factory`` (``"module:function"`` returning the app) from ``workers`` processes on one port.

    uvicorn's own supervisor: it binds the socket once, starts the processes (each builds its app by calling
    the factory, so each has its own pools and ledger writer), restarts one that dies, and stops them all on
    SIGINT/SIGTERM. The kernel spreads connections over the processes accepting on the shared socket. ``http``:
    the app's ``http_protocol`` (the app is built in each worker, after this is called).
    """
    uvicorn.run(
        factory, host=host, port=port, factory=True, workers=workers, loop="uvloop", http=http,
        log_level=options.pop("log_level", "warning"), access_log=False, **options,
    )  # fmt: skip


class BackgroundServer:
    """A uvicorn server on its own thread and event loop; a context manager."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None, **options: Any) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(_config(app, self.host, self.port, **options))
        self._thread = threading.Thread(target=self.server.run, name=f"asgi:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
