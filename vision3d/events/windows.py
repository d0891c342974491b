"""Cut an :class:`EventStream` into windows by time or by event count.

Both return a list of :class:`Window` (index range plus time range) so callers can slice
lazily with ``stream[w.slice]``. An empty time window is an error that names the file and
the window (``skip_empty=True`` drops them instead); a count window shorter than asked at
the end of the stream is dropped unless ``keep_partial=True``. :func:`check_window` refuses
a window of event tensors that no fit can use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vision3d.events.stream import EventFileError, EventStream


@dataclass(frozen=True)
class Window:
    start: int  # first event index
    stop: int  # one past the last event index
    t_start_us: int
    t_end_us: int

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    def __len__(self) -> int:
        return self.stop - self.start


def time_windows(
    stream: EventStream,
    duration_us: int,
    stride_us: int | None = None,
    *,
    t_start_us: int | None = None,
    t_end_us: int | None = None,
    min_events: int = 1,
    skip_empty: bool = False,
) -> list[Window]:
    """Whole windows ``[t0 + k·stride, t0 + k·stride + duration)`` inside the stream's span (or ``[t_start, t_end)``).

    A trailing window that would end after ``t_end`` is dropped (a shorter window would bias a
    per-window fit), unless it is the only one.
    """
    if duration_us <= 0:
        raise ValueError(f"window duration must be positive, got {duration_us} µs")
    stride_us = stride_us or duration_us
    if stride_us <= 0:
        raise ValueError(f"window stride must be positive, got {stride_us} µs")
    if len(stream) == 0:
        raise EventFileError(stream.source, "contains no events to cut into windows")
    t = stream.t
    t0 = int(t[0]) if t_start_us is None else int(t_start_us)
    t1 = int(t[-1]) + 1 if t_end_us is None else int(t_end_us)
    starts = np.arange(t0, t1, stride_us, dtype=np.int64)
    starts = starts[starts + duration_us <= t1] if len(starts) > 1 else starts
    lo = np.searchsorted(t, starts, side="left")
    hi = np.searchsorted(t, starts + duration_us, side="left")
    out = []
    for s, a, b in zip(starts, lo, hi, strict=True):
        if b - a < min_events:
            if skip_empty:
                continue
            raise EventFileError(
                stream.source,
                f"window [{int(s)}, {int(s) + duration_us}) µs holds {int(b - a)} event(s), fewer than "
                f"{min_events} (empty window; pass skip_empty=True to drop such windows)",
            )
        out.append(Window(int(a), int(b), int(s), int(s) + duration_us))
    if not out:
        raise EventFileError(stream.source, f"no window of {duration_us} µs holds {min_events} event(s)")
    return out


def count_windows(
    stream: EventStream, n_events: int, stride: int | None = None, *, keep_partial: bool = False
) -> list[Window]:
    """Windows of ``n_events`` consecutive events, starting every ``stride`` events (default: no overlap)."""
    if n_events <= 0:
        raise ValueError(f"events per window must be positive, got {n_events}")
    stride = stride or n_events
    n = len(stream)
    if n == 0:
        raise EventFileError(stream.source, "contains no events to cut into windows")
    if n < n_events and not keep_partial:
        raise EventFileError(stream.source, f"holds {n} events, fewer than one window of {n_events}")
    t = stream.t
    out = []
    for a in range(0, n, stride):
        b = min(a + n_events, n)
        if b - a < n_events and not keep_partial:
            break
        out.append(Window(a, b, int(t[a]), int(t[b - 1]) + 1))
        if b == n:
            break
    return out


def check_window(xy: Tensor, t_s: Tensor, weights: Tensor | None = None) -> None:
    """Refuse a window that cannot be fitted (:class:`EventFileError`): wrong shapes, no events, non-finite values.

    NaN coordinates would otherwise give NaN flow silently, or index out of bounds in CMax's patch grid.
    """
    if xy.ndim != 2 or xy.shape[1] != 2 or t_s.shape != xy.shape[:1]:
        raise EventFileError(None, f"xy must be [N, 2] and t_s [N], got {tuple(xy.shape)} and {tuple(t_s.shape)}")
    if xy.shape[0] == 0:
        raise EventFileError(None, "cannot fit an empty window")
    for name, values in (("coordinates", xy), ("timestamps", t_s), ("weights", weights)):
        if values is not None and not bool(torch.isfinite(values).all()):
            bad = int((~torch.isfinite(values)).reshape(len(values), -1).any(-1).sum())
            raise EventFileError(None, f"{bad} of {len(values)} events have NaN or infinite {name}")
