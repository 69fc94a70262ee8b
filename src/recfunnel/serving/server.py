"""Run the service with uvicorn: one process, or a supervisor with several workers.

Reloading without downtime:

* one worker: ``SIGHUP`` (or ``POST /v1/admin/reload``) loads the run folder again in a
  background thread and swaps it in atomically; requests in flight finish on the old model.
* ``--workers N``: uvicorn's supervisor turns ``SIGHUP`` into a rolling restart (each new
  worker is ready before the old one stops, and the old one finishes its requests); the admin
  endpoint checks the folder and then sends that signal.

Either way a broken run folder is refused and the previous model keeps serving.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import uvicorn

from recfunnel.runs import Run
from recfunnel.serving.app import WORKERS_ENV, create_app

log = logging.getLogger("recfunnel.serving")


def serve(
    run_dir,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    token: str | None = None,
    index: str = "auto",
    access_log: bool = False,
    log_level: str = "warning",
) -> None:
    """Serve ``run_dir`` until interrupted. Raises ``ArtifactError`` before binding when the
    run folder is broken (the CLI prints it as one line)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    options = dict(host=host, port=port, access_log=access_log, log_level=log_level,
                   timeout_graceful_shutdown=10)  # fmt: skip
    if workers <= 1:
        app = create_app(run_dir, token=token, index=index)
        holder = app.state.holder

        def on_hup(signum, frame):
            threading.Thread(target=holder.reload_logged, daemon=True).start()

        signal.signal(signal.SIGHUP, on_hup)
        uvicorn.run(app, **options)
        return
    Run.load(run_dir)  # fail here, once, with the artifact message
    os.environ["RECFUNNEL_SERVE_RUN_DIR"] = os.path.abspath(run_dir)
    os.environ["RECFUNNEL_SERVE_INDEX"] = index
    os.environ[WORKERS_ENV] = str(workers)
    if token:
        os.environ["RECFUNNEL_TOKEN"] = token
    uvicorn.run(
        "recfunnel.serving.app:app_from_env",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=120,  # a new worker imports torch and loads the run
        **options,
    )
