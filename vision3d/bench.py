"""``v3d bench``: run the scripts in the checkout's ``benchmarks/`` folder; each prints a measured table."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from vision3d.errors import InputNotFoundError

CHECKOUT = Path(__file__).resolve().parents[1]
"""The source checkout in an editable install (benchmarks are scripts of the checkout, not package data)."""


def benchmarks_dir() -> Path:
    """``benchmarks/`` of the source checkout (beside the package in an editable install, or in the cwd)."""
    for candidate in (CHECKOUT / "benchmarks", Path.cwd() / "benchmarks"):
        if candidate.is_dir():
            return candidate
    raise InputNotFoundError("no benchmarks/ folder: the benchmarks are scripts of the source checkout; run `v3d bench` "
                             "from a vision3d checkout (or an editable install of one)")


def run_benchmarks(name: str = "all") -> None:
    folder = benchmarks_dir()
    scripts = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    if name != "all":
        scripts = [p for p in scripts if p.stem == name]
        if not scripts:
            known = ", ".join(p.stem for p in sorted(folder.glob("*.py")))
            raise SystemExit(f"no benchmark {name!r} in {folder} (have: {known})")
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        sys.argv = [str(script)]
        runpy.run_path(str(script), run_name="__main__")
