"""Where vision3d keeps what it fetches or compiles, so that a second run reads the disk.

``$VISION3D_CACHE`` when set, else ``$XDG_CACHE_HOME/vision3d``, else ``~/.cache/vision3d`` (the XDG
base-directory default). Users: apt data (``apt/``, :mod:`vision3d.data.apt_data`), Numba's compiled CPU
kernels (``numba/``, :mod:`vision3d.render.numba_cache`), rendered and pose-training scenes.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$VISION3D_CACHE``, ``$XDG_CACHE_HOME/vision3d`` or ``~/.cache/vision3d``."""
    root = os.environ.get("VISION3D_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else Path.home() / ".cache"
    return base / "vision3d"
