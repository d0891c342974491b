"""Keep freed memory for reuse on CPU runs, instead of handing it back to the OS after every step.

glibc's malloc serves large blocks (tensors of more than 128 KiB to 32 MiB) with ``mmap`` and returns them with
``munmap`` when freed, and trims the heap's free top; a training step allocates the same large tensors again,
so each step faults all their pages in anew, zero-filled by the kernel. On an IR-NeRF CPU step (bunny, 32²)
that was ~215 000 minor page faults and 0.29 s of kernel time a step: 0.81 s a step against 0.57 s with
freed memory kept (``benchmarks/cpu_allocator.py``, docs/splat.md "Freed memory"). :func:`keep_freed_memory`
sets ``M_MMAP_MAX = 0`` (large blocks come from the heap too) and a 1 GiB ``M_TRIM_THRESHOLD`` (freed memory
stays, to be reused), at the cost of a higher peak RSS. Unlike libgomp's spin (:mod:`vision3d.openmp`) it can
be set at any time, so the trainer applies it for ``ns-train`` as well as ``v3d``.

Only with glibc (Linux); elsewhere, or when the user sets ``VISION3D_MALLOC=system`` or glibc's own malloc
settings (``GLIBC_TUNABLES`` or ``MALLOC_*_`` variables), it changes nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

OPT_OUT = "VISION3D_MALLOC"
"""``VISION3D_MALLOC=system`` leaves glibc's malloc as it is (benchmarks compare against it this way)."""
TRIM_THRESHOLD = 1 << 30
"""Bytes of free memory at the heap's top kept rather than returned to the OS (``M_TRIM_THRESHOLD``)."""
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's <malloc.h>


def user_sets_malloc(environment: Mapping[str, str] | None = None) -> bool:
    """Whether ``environment`` (default ``os.environ``) opts out or tunes glibc's malloc itself."""
    environment = os.environ if environment is None else environment
    return (environment.get(OPT_OUT, "") == "system" or "glibc.malloc" in environment.get("GLIBC_TUNABLES", "")
            or any(name.startswith("MALLOC_") and name.endswith("_") for name in environment))


def without_malloc_settings(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` without the variables of :func:`user_sets_malloc` (benchmarks and tests start processes
    from it whose malloc they set themselves), as :func:`vision3d.openmp.without_spin_settings` for the spin."""
    return {k: v for k, v in environment.items() if not user_sets_malloc({k: v})}


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (see the module docstring). Returns whether it did:
    False without glibc or where :func:`user_sets_malloc`. Safe to call more than once."""
    if not sys.platform.startswith("linux") or user_sets_malloc():
        return False
    libc = ctypes.CDLL(None)  # the symbols this process has loaded: its own C library, found without a search
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl's mallopt does nothing)
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
