"""Where Numba caches our compiled CPU kernels: a user cache folder, not the package's ``__pycache__``.

Numba's ``cache=True`` writes beside the source by default, which is read-only in a system or shared
install, so every run there compiled the kernels again (~25 s with an empty cache: 13.9 s forward,
11.3 s backward). :func:`use_user_cache` picks ``$NUMBA_CACHE_DIR`` when set, else ``numba/`` under
:func:`vision3d.cache.cache_root` (``$VISION3D_CACHE``, ``$XDG_CACHE_HOME/vision3d`` or
``~/.cache/vision3d``). Numba fixes a function's cache folder when it is decorated, so each ``*_numba``
module calls it before its first ``@numba.njit(cache=True)``. It also exports ``NUMBA_CACHE_DIR``, which
Numba re-reads when it compiles and child processes inherit. When the cache holds none of our kernels
yet, one log line (once per process) says that they compile once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numba
from numba.core.caching import _CacheLocator

from vision3d.cache import cache_root

log = logging.getLogger(__name__)
_told: set[str] = set()  # kernel families already announced in this process


def numba_cache_dir() -> Path:
    """``$NUMBA_CACHE_DIR``, else ``<cache_root>/numba``."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    return Path(env).expanduser() if env else cache_root() / "numba"


def use_user_cache(module_file: str, what: str = "the CPU rasterizer's Numba kernels", seconds: int = 25) -> Path:
    """Point Numba's cache at :func:`numba_cache_dir` for the kernels of ``module_file``; returns the folder
    where Numba keeps them, and logs once per process and family (``what``, compiled in about ``seconds``)
    when it holds no kernel of ours yet."""
    folder = numba_cache_dir()
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    numba.config.CACHE_DIR = str(folder)
    kernels = folder / _CacheLocator.get_suitable_cache_subpath(module_file)
    if what not in _told and not any(kernels.glob("*.nbi")):
        _told.add(what)
        log.warning("vision3d: compiling %s once (about %d s); later runs load them from %s", what, seconds, folder)
    return kernels
