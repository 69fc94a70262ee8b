"""How many CPU threads recfunnel uses: one setting for PyTorch, OpenMP and BLAS.

On a shared or small machine more threads than physical cores only adds contention (fit time
swung 10x on a loaded 2-core machine, and 1 thread beat 2 in paired runs), so the default is
the number of physical cores this process may run on, and every library gets the same number:
never more threads than cores in total.
"""

from __future__ import annotations

import contextlib
import os

from recfunnel.errors import RecfunnelError

#: environment variables that size the OpenMP / BLAS thread pools (read when they load)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads counted once)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    cores = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            physical = core = None
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not line.strip() and core is not None:
                    cores.add((physical, core))
                    physical = core = None
            if core is not None:
                cores.add((physical, core))
    except OSError:
        pass
    return max(1, min(allowed, len(cores) or allowed))


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` threads in every pool; returns it. Default: ``$OMP_NUM_THREADS`` where
    it is set to a positive number (the caller's explicit choice, as PyTorch itself reads
    it), else :func:`physical_cores`.

    Call before NumPy/SciPy/PyTorch do any work: the OpenMP and BLAS variables are read when
    those libraries load, so the CLI calls this before importing them.
    """
    if threads is None:
        given = os.environ.get("OMP_NUM_THREADS", "").strip()
        threads = int(given) if given.isdigit() and int(given) > 0 else physical_cores()
    if threads < 1:
        raise RecfunnelError(f"--threads must be at least 1, not {threads}")
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work has started
        torch.set_num_interop_threads(1)
    return threads
