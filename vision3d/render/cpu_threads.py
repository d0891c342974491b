"""Keep torch's OpenMP pool off the cores while the Numba kernels run.

After every multi-threaded op, torch's OpenMP workers (libgomp) spin-wait for the next
one (``GOMP_SPINCOUNT``, 300k pause iterations by default: milliseconds on AMD cores,
whose PAUSE is slow). Between two Numba kernels a single torch op is enough to leave a
spinning worker on the core a Numba thread needs, so the kernels run on one core in
effect. Measured on 2 cores at 128²/20k, forward+backward interleaved in one process:
48 ms with torch's ops on 2 threads, 42 ms with this context, 39 ms with torch on one
thread throughout (the rest is the caller's own torch ops, e.g. the loss, whose workers
still spin into the backward). So the CPU rasterizer runs its own torch ops (small
element-wise work on per-Gaussian arrays) on one thread. For a whole process the spin has to be
set before torch loads: ``v3d`` shortens it (:mod:`vision3d.openmp`), which matters most when other work
shares the cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_single_threaded() -> Iterator[None]:
    """Run the enclosed torch ops on one thread, restoring the caller's thread count after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
