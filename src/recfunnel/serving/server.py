"""Run the service with uvicorn: one process, or a supervisor with several workers.

Reloading without downtime:

* one worker: ``SIGHUP`` (or ``POST /v1/admin/reload``) loads the run folder again in a
  background thread and swaps it in atomically; requests in flight finish on the old model.
* ``--workers N``: uvicorn's supervisor turns ``SIGHUP`` into a rolling restart: each new worker
  is ready before the old one is told to stop, and the old one DRAINS (:class:`DrainingServer`):
  it stops accepting, answers every request that still reaches it on an open connection with
  ``Connection: close`` (so clients' keep-alive connections end cleanly), finishes what is in
  flight, waits until every connection is closed (an idle keep-alive connection is closed by
  uvicorn's keep-alive timeout, as on any day), and only then exits. Workers are forked from a
  fork server that imported torch, FastAPI and recfunnel once (:func:`worker_context`), so a new
  worker is ready in about the time it takes to load the run, not to import torch again. The
  admin endpoint checks the folder and then sends the signal.

Either way a broken run folder is refused and the previous model keeps serving.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading

import uvicorn
from uvicorn._subprocess import subprocess_started
from uvicorn.supervisors import multiprocess

from recfunnel.errors import RecfunnelError
from recfunnel.runs import Run
from recfunnel.serving import app as app_module
from recfunnel.serving.app import (
    LOOPBACK_HOSTS,
    SUPERVISOR_ENV,
    WORKERS_ENV,
    create_app,
    settle_heap,
)

log = logging.getLogger("recfunnel.serving")

KEEP_ALIVE_SECONDS = 5  # uvicorn closes a keep-alive connection idle this long (its default)
# How long a stopping worker waits for its connections to close: longer than the keep-alive
# timeout, so it never cuts a connection itself; only a client holding one busy past this is cut.
DRAIN_SECONDS = KEEP_ALIVE_SECONDS + 5.0
# How often a thread holding the GIL is asked to pass it on (Python's default: 5 ms). Scoring
# threads hold it in Python loops; a shorter interval lets the event loop answer /healthz and
# light requests sooner while heavy batches compute.
SWITCH_INTERVAL = 0.001
# Imported once by the fork server that starts the workers (see worker_context).
PRELOAD = ["recfunnel.serving.forkserver"]


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains before it exits (see the module docstring)."""

    async def shutdown(self, sockets=None) -> None:
        for server in self.servers:  # stop accepting: the listening socket is shared, so new
            server.close()  # connections (and those queued on it) go to the other workers
        app_module.start_draining()  # every answer from now on says Connection: close
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        await asyncio.sleep(0.1)  # connections accepted just before the close get registered
        # Each connection ends by itself: after its next answer (Connection: close), or, when
        # idle, by uvicorn's keep-alive timeout. Cutting one here could meet a request the
        # client is sending at that moment ("Connection reset by peer").
        while self.server_state.connections and loop.time() < deadline and not self.force_exit:
            await asyncio.sleep(0.02)
        if self.server_state.connections:
            log.warning("worker %d exits with %d connection(s) still open after %.0f s of "
                        "draining", os.getpid(), len(self.server_state.connections),
                        DRAIN_SECONDS)  # fmt: skip
        await super().shutdown(sockets)


def worker_context():
    """The multiprocessing context worker processes start from: a fork server that has
    imported :data:`PRELOAD` (torch, FastAPI, recfunnel) once, single-threaded, so each worker
    forks ready-made instead of importing torch again (uvicorn spawns a fresh interpreter,
    seconds of CPU per worker, which on a busy machine stretched a rolling restart past the
    supervisor's health-check timeout). ``spawn`` where there is no fork server (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


class _DrainingProcess(multiprocess.Process):
    """uvicorn's worker process, running a :class:`DrainingServer` (uvicorn has no hook),
    started from :func:`worker_context`."""

    context = None  # set by serve()

    def __init__(self, config, sockets) -> None:
        super().__init__(config, sockets)  # builds a spawn process object; replaced here
        if self.context is not None:
            kwargs = {"config": config, "target": self.target, "sockets": sockets,
                      "stdin_fileno": None}  # fmt: skip
            self.process = self.context.Process(target=subprocess_started, kwargs=kwargs)

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


def check_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise RecfunnelError(f"--port must be between 0 and 65535, not {port}; 0 picks a free one")
    return port


def default_allowed_hosts(host: str) -> list[str] | None:
    """The Host names a loopback bind answers to (DNS-rebinding defence); None: any."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return sorted({*LOOPBACK_HOSTS, host}) if loopback else None


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a one-line error (port in use, address not on this machine)."""
    check_port(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        why = getattr(exc, "strerror", None) or str(exc)
        fix = ("pick another --port, or stop the server using it" if
               getattr(exc, "errno", None) == 98 else "check --host and --port")  # fmt: skip
        raise RecfunnelError(f"cannot listen on {host}:{port}: {why}; {fix}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def startup_line(run_dir, url: str, *, token: bool) -> str:
    """What ``serve`` prints once it listens: the URL, the API docs and the explorer page."""
    docs = f"{url}/docs" + (" (send the token)" if token else "")
    return f"serving {run_dir} on {url} (docs: {docs}; explorer: {url}/ui); Ctrl-C stops"


def serve(
    run_dir,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    token: str | None = None,
    index: str = "auto",
    runs_root=None,
    allowed_hosts: list[str] | None = None,
    access_log: bool = False,
    log_level: str = "warning",
) -> None:
    """Serve ``run_dir`` until interrupted.

    Raises :class:`~recfunnel.errors.RecfunnelError` (one line) before serving when the run
    folder is broken, the port is out of range or in use. ``allowed_hosts`` defaults to the
    loopback names for a loopback ``host`` (else no Host check; ``["*"]`` turns it off).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    check_port(port)
    sys.setswitchinterval(SWITCH_INTERVAL)
    if allowed_hosts is None:
        allowed_hosts = default_allowed_hosts(host)
    options = dict(access_log=access_log, log_level=log_level, timeout_graceful_shutdown=10,
                   timeout_keep_alive=KEEP_ALIVE_SECONDS)  # fmt: skip
    if workers <= 1:
        app = create_app(run_dir, token=token, index=index, runs_root=runs_root,
                         allowed_hosts=allowed_hosts)  # fmt: skip
        holder = app.state.holder
        settle_heap()
        config = uvicorn.Config(app, **options)
    else:
        Run.load(run_dir)  # fail here, once, with the artifact message
        os.environ["RECFUNNEL_SERVE_RUN_DIR"] = os.path.abspath(run_dir)
        os.environ["RECFUNNEL_SERVE_INDEX"] = index
        os.environ["RECFUNNEL_SERVE_RUNS_ROOT"] = os.path.abspath(runs_root) if runs_root else ""
        os.environ["RECFUNNEL_SERVE_ALLOWED_HOSTS"] = ",".join(allowed_hosts or [])
        os.environ[WORKERS_ENV] = str(workers)
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
        if token:
            os.environ["RECFUNNEL_TOKEN"] = token
        config = uvicorn.Config("recfunnel.serving.app:app_from_env", factory=True,
                                workers=workers, timeout_worker_healthcheck=120,
                                **options)  # fmt: skip
    sock = bind(host, port)
    url = url_of(sock)
    print(startup_line(run_dir, url, token=bool(token)), file=sys.stderr, flush=True)
    if workers <= 1:

        def on_hup(signum, frame):
            threading.Thread(target=holder.reload_logged, daemon=True).start()

        signal.signal(signal.SIGHUP, on_hup)
        uvicorn.Server(config).run(sockets=[sock])  # no other worker to drain towards
        return
    _DrainingProcess.context = worker_context()
    multiprocess.Process = _DrainingProcess  # every worker the supervisor starts drains
    multiprocess.Multiprocess(config, sockets=[sock]).run()
