"""numba compilation for the per-frame kernels: without the GIL, cached on disk."""

from __future__ import annotations

import numba


def compiled(fn):
    """`fn` compiled by numba without the GIL (the encoder thread runs beside the render
    loop), cached on disk so a process loads it instead of compiling (about 1 s): in
    __pycache__, else under $NUMBA_CACHE_DIR or $XDG_CACHE_HOME. Where none of those can be
    written (a read-only image without a writable home) each process compiles it once."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)
