"""gsplat's compositing thresholds, shared by binning, both compositing paths and the dense reference.

A Gaussian adds ``α = min(ALPHA_MAX, o·exp(−σ))`` to a pixel only when ``α ≥ ALPHA_MIN``, i.e.
inside the ellipse ``σ ≤ log(o / ALPHA_MIN)``; a pixel stops (exclusively) once its
transmittance would fall to ``T_MIN`` or below.
"""

from __future__ import annotations

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
# Solved ellipses (tile culling, row spans) use σ ≤ log(o / ALPHA_MIN) + CUT_MARGIN, so that a
# pixel within rounding of the cut is still visited and decided by the exact per-pixel test.
CUT_MARGIN = 1e-3
