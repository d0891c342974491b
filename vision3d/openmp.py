"""How long torch's OpenMP workers spin-wait, set before torch loads (libgomp reads it once, at load).

After each multi-threaded op, torch's OpenMP workers (libgomp) spin for the next one, 300 000 iterations by
default (``GOMP_SPINCOUNT``). While our CPU kernels run, those spinning workers take the time slices the
kernels' own threads need (:mod:`vision3d.render.cpu_threads`); when another process also wants the cores
(a second run, a browser) this compounds: beside one busy process on the 2-core machine, the det-gs demo
took 10–17× as long as alone. With a spin count of 3000 it takes 1.7× (about its fair share) and alone it is
as fast as before; ``OMP_WAIT_POLICY=PASSIVE`` (no spinning) is unaffected beside other work but 25–35 %
slower alone (``benchmarks/cpu_contention.py``, docs/splat.md). ``v3d`` applies it to itself and to the
``ns-train`` it starts; ``ns-train`` run directly loads torch before our plugins, so it needs the variable
in its environment (README, "Devices"), and :func:`spin_hint` says so when a CPU run lacks it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

SPIN_COUNT = "3000"
SPIN_SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
"""The variables by which a user sets libgomp's spin; when either is set, we leave the spin alone."""


def spin_is_set() -> bool:
    """Whether this process's environment sets libgomp's spin (:data:`SPIN_SETTINGS`)."""
    return any(name in os.environ for name in SPIN_SETTINGS)


def short_openmp_spin() -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` for this process and the ones it starts, unless the user has
    set it or ``OMP_WAIT_POLICY``. Takes effect only before torch is first imported. Returns whether it set it."""
    if spin_is_set():
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True


def spin_hint(argv: list[str] | None = None) -> str | None:
    """One line of advice for an ``ns-train`` process (``argv``, default ``sys.argv``) whose torch loaded with
    libgomp's default spin (neither ``GOMP_SPINCOUNT`` nor ``OMP_WAIT_POLICY`` set), else None. Our trainer
    prints it when it trains on CPU."""
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).name != "ns-train" or spin_is_set():
        return None
    return (f"vision3d: training on CPU with torch's default OpenMP spin-wait, which runs ~10x slower while other work "
            f"shares the cores; `export GOMP_SPINCOUNT={SPIN_COUNT}` before ns-train avoids it (docs/splat.md)")


def without_spin_settings(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` without ``GOMP_SPINCOUNT`` and ``OMP_WAIT_POLICY`` (benchmarks and tests start processes
    with libgomp's default spin from it)."""
    return {k: v for k, v in environment.items() if k not in SPIN_SETTINGS}
