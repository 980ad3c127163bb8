"""Compiled twins of the counters' inner loops (numba), switched on or off here.

Each module with hot loops (the counters, the within-source order) holds their
compiled twins beside the numpy or Python code they twin, and registers a
``build(jit)`` that compiles them (``register``);
every twin gives the same integers bit for bit. numba is optional
(``pip install "annealmix[fast]"``). Without it, or with ``ANNEALMIX_KERNELS=numpy``
in the environment, the numpy and Python code runs instead: same integers, same
stream, only slower (``benchmarks/bench_plan.py``, ``bench_tokens.py`` and
``bench_online.py`` measure both). The first call in a fresh environment compiles
(numba caches the machine code on disk; later processes load it).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np

_built: object = None  # the kernels once built; False where there are none
_builders: list = []  # each counter module's build(jit) -> {name: kernel}


def register(build):
    """Register a module's ``build(jit) -> {name: compiled kernel}`` (a decorator)."""
    _builders.append(build)
    return build


def kernels():
    """The compiled kernels (a namespace: ``quantize``, ``blend``,
    ``earliest_deadline``, ``carried``, ``tokens``), or ``None`` without numba or with
    ``ANNEALMIX_KERNELS=numpy``. numba is imported on the first call, not with
    annealmix."""
    global _built
    if _built is None:
        _built = _build() or False
    return _built or None


def select(buf: np.ndarray, count: int, kth: int) -> int:
    """The ``kth`` smallest of ``buf[:count]`` (distinct values), reordering them."""
    lo, hi = 0, count - 1
    while lo < hi:
        pivot = buf[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if kth <= j:
            hi = j
        elif kth >= i:
            lo = i
        else:
            break
    return buf[kth]


@contextmanager
def numpy_only():
    """The numpy code inside the ``with``, as without numba (benchmarks and tests
    compare the two; not for use while other threads plan)."""
    global _built
    saved, _built = _built, False
    try:
        yield
    finally:
        _built = saved


def threads() -> int:
    """Threads a long replay may use: ``ANNEALMIX_THREADS``, else the cores this
    process may run on."""
    wanted = os.environ.get("ANNEALMIX_THREADS")
    if wanted is not None:
        try:
            return max(1, int(wanted))
        except ValueError:
            raise ValueError(
                f"ANNEALMIX_THREADS must be a whole number of threads, got {wanted!r}; "
                "unset it to use every core this process may run on"
            ) from None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _build():
    wanted = os.environ.get("ANNEALMIX_KERNELS", "numba")
    if wanted not in ("numba", "numpy"):
        raise ValueError(
            f"ANNEALMIX_KERNELS must be 'numba' or 'numpy', got {wanted!r}; 'numpy' runs "
            "the plan without compiled kernels (the same stream), unset it to use them"
        )
    if wanted == "numpy" or importlib.util.find_spec("numba") is None:
        return None
    try:  # an optional extra: every kernel has a numpy twin beside it
        import numba
    except ImportError as err:  # installed, but not for this numpy or Python
        warnings.warn(
            f"numba is installed but does not import ({err}); exact plans run on numpy "
            "alone (the same stream, slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT: the kernels would run as Python
        return None

    def jit(fn):
        return numba.njit(nogil=True, cache=True)(getattr(fn, "py_func", fn))

    built = {}
    for build in _builders:
        built |= build(jit)
    return SimpleNamespace(**built)
