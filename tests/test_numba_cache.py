"""Numba's cache goes to a user cache folder ($NUMBA_CACHE_DIR, else $XDG_CACHE_HOME/vision3d/numba), never
the package's __pycache__, and a cold cache is announced once. Each check runs in a fresh process, because
Numba fixes a kernel's cache folder when the kernel's module is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

# Imports the kernels, compiles one small one (a stable radix sort), prints where Numba caches the kernels.
CHILD = """
import numpy as np
from vision3d.render import composite_numba, projection_numba, tiles_numba
from numba.core.registry import CPUDispatcher

paths = {k._cache._cache_path for m in (composite_numba, projection_numba, tiles_numba)
         for k in vars(m).values() if isinstance(k, CPUDispatcher)}
assert tiles_numba._radix_argsort(tiles_numba._sortable_bits(np.array([2.0, 1.0]))).tolist() == [1, 0]
print(*paths, sep="\\n")
"""


def _run(tmp_path: Path, **env) -> tuple[set[Path], str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "VISION3D_CACHE", "XDG_CACHE_HOME")}
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300,
                            env={**clean, "HOME": str(tmp_path / "home"), **env}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return {Path(p) for p in result.stdout.split()}, result.stderr


def _cache_files(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")}


def test_numba_cache_dir_is_respected_and_a_cold_cache_is_announced_once(tmp_path):
    cache = tmp_path / "numba-cache"
    paths, stderr = _run(tmp_path, NUMBA_CACHE_DIR=str(cache))
    assert len(paths) == 1 and next(iter(paths)).parent == cache  # every kernel, one folder of ours
    written = _cache_files(cache)
    assert any(n.startswith("tiles_numba._radix_argsort") for n in written), written
    assert stderr.count("compiling the CPU rasterizer's Numba kernels once") == 1, stderr
    _, stderr = _run(tmp_path, NUMBA_CACHE_DIR=str(cache))
    assert "compiling" not in stderr, stderr  # warm: loaded, not announced
    assert _cache_files(cache) == written


def test_numba_cache_defaults_to_the_xdg_cache_home(tmp_path):
    paths, _ = _run(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert {p.parent for p in paths} == {tmp_path / "xdg" / "vision3d" / "numba"}
    assert _cache_files(tmp_path / "xdg" / "vision3d" / "numba")
    paths, _ = _run(tmp_path)  # neither set: ~/.cache
    assert {p.parent for p in paths} == {tmp_path / "home" / ".cache" / "vision3d" / "numba"}
