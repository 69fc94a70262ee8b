"""numba, where installed (the ``fast`` extra): the compiled kernels' switch and launcher."""

from __future__ import annotations

try:  # optional: without numba the torch / NumPy paths run
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

#: whether the compiled kernels (models/als_kernels.py, eval_kernels.py) can run
AVAILABLE = numba is not None


def launch(kernel, *args):
    """Run a parallel ``kernel`` on as many threads as torch uses. numba's OpenMP layer resets
    the process's OpenMP thread count when it starts; torch's is put back afterwards."""
    import torch

    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        return kernel(*args)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
