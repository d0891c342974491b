"""Where a HelixSurf run's wall time goes: seconds per part of training, accumulated over the run.

The occupancy grid accelerates only the SDF's own work (training steps and the renders that seed MVS and
refresh the planes); MVS passes and superpixel planes are not grid work. So the speed-up of the grid over a
whole run is bounded by how much of the run those other parts take, and a run reports them apart:

- ``sdf_steps``: the trainer's training iterations (forward, losses, backward, optimiser), one entry per step;
- ``grid_updates``: occupancy grid refreshes; ``mvs``: PatchMatch passes (resizing the views included);
- ``sdf_renders``: rendering every training view for MVS seeds and plane refreshes;
- ``planes``: superpixels and per-superpixel plane normals / Manhattan seeds;
- ``between_steps``: what the trainer does between iterations (evaluation, checkpoints, logging, viewer).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

PARTS = ("sdf_steps", "grid_updates", "mvs", "sdf_renders", "planes", "between_steps")


class PartTimes:
    """Accumulated wall seconds per part (``seconds[name]``) and each training step's seconds (``step_seconds``)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.step_seconds: list[float] = []

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to ``name``."""
        if name not in self.seconds:
            raise ValueError(f"PartTimes: unknown part {name!r}; parts are {PARTS}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def add_step(self, seconds: float) -> None:
        self.step_seconds.append(seconds)
        self.seconds["sdf_steps"] += seconds

    def median_step(self, second_half: bool = False) -> float:
        """Median training-step seconds (over the run's second half with ``second_half``); 0 before any step."""
        steps = self.step_seconds[len(self.step_seconds) // 2 :] if second_half else self.step_seconds
        return statistics.median(steps) if steps else 0.0

    def summary(self) -> str:
        """One line: each part's seconds and share of their total, and the median step."""
        total = sum(self.seconds.values())
        parts = ", ".join(f"{name} {s:.1f} s ({s / max(total, 1e-9):.0%})" for name, s in self.seconds.items())
        return (f"{parts}; {len(self.step_seconds)} steps, median {self.median_step():.3f} s/step "
                f"({self.median_step(second_half=True):.3f} in the second half)")
