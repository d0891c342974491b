"""The in-memory event type every part of ``vision3d.events`` passes around.

An :class:`EventStream` is a numpy structured array in time order plus the sensor size
and where it came from. Decisions:

* ``t`` is an ``int64`` count of **microseconds** (DSEC's, AEDAT's and Prophesee's unit;
  text and MVSEC files in seconds are rounded to the microsecond on reading).
* ``x``, ``y`` are ``uint16`` pixel columns/rows (origin top-left, as every sensor writes).
* ``p`` is ``int8`` polarity in ``{-1, +1}`` (MVSEC's convention; files storing 0/1 or a
  bool ``on`` field are mapped 0 -> -1, 1 -> +1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision3d.errors import Vision3DError

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "i1")])


class EventFileError(Vision3DError, ValueError):
    """A file (or a window of one) that cannot be used; the message names the file and the problem."""

    def __init__(self, source: str | Path | None, problem: str):
        self.source = str(source) if source is not None else "<in-memory events>"
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


@dataclass
class EventStream:
    """Events in time order. ``events`` has dtype :data:`EVENT_DTYPE`; ``sensor_size`` is (width, height)."""

    events: np.ndarray
    sensor_size: tuple[int, int]
    source: str = "<in-memory events>"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.events.dtype != EVENT_DTYPE:
            self.events = self.events.astype(EVENT_DTYPE)
        self.sensor_size = (int(self.sensor_size[0]), int(self.sensor_size[1]))

    # --- views -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index) -> EventStream:
        sub = self.events[index]
        if sub.ndim == 0:
            sub = sub.reshape(1)
        return EventStream(sub, self.sensor_size, self.source, dict(self.meta))

    @property
    def width(self) -> int:
        return self.sensor_size[0]

    @property
    def height(self) -> int:
        return self.sensor_size[1]

    @property
    def t(self) -> np.ndarray:
        return self.events["t"]

    @property
    def x(self) -> np.ndarray:
        return self.events["x"]

    @property
    def y(self) -> np.ndarray:
        return self.events["y"]

    @property
    def p(self) -> np.ndarray:
        return self.events["p"]

    @property
    def duration_us(self) -> int:
        return int(self.t[-1] - self.t[0]) if len(self) else 0

    def to_torch(self, device="cpu", dtype=None):
        """``(xy [N,2] float, t [N] float seconds relative to the first event, p [N] float ±1)``."""
        import torch

        dtype = dtype or torch.float32
        xy = torch.from_numpy(np.stack([self.x, self.y], 1).astype(np.float64)).to(device, dtype)
        t0 = self.t[0] if len(self) else 0
        t = torch.from_numpy((self.t - t0).astype(np.float64) * 1e-6).to(device, dtype)
        p = torch.from_numpy(self.p.astype(np.float64)).to(device, dtype)
        return xy, t, p

    def downscale(self, factor: int) -> EventStream:
        """Integer-divide coordinates by ``factor`` (pixel binning); the sensor shrinks to ceil(size/factor)."""
        if factor == 1:
            return self
        ev = self.events.copy()
        ev["x"] //= factor
        ev["y"] //= factor
        size = (-(-self.width // factor), -(-self.height // factor))
        return EventStream(ev, size, self.source, {**self.meta, "downscale": factor})

    def crop(self, x0: int, y0: int, width: int, height: int) -> EventStream:
        """Events inside ``[x0, x0+width) × [y0, y0+height)``, shifted to the crop's origin."""
        ev = self.events
        keep = (ev["x"] >= x0) & (ev["x"] < x0 + width) & (ev["y"] >= y0) & (ev["y"] < y0 + height)
        out = ev[keep].copy()
        out["x"] -= x0
        out["y"] -= y0
        return EventStream(out, (width, height), self.source, {**self.meta, "crop": (x0, y0, width, height)})


def make_events(t_us, x, y, p) -> np.ndarray:
    """Build an :data:`EVENT_DTYPE` array; polarity may be ±1, 0/1 or bool."""
    t_us = np.asarray(t_us)
    out = np.empty(len(t_us), EVENT_DTYPE)
    out["t"] = t_us
    out["x"] = np.asarray(x)
    out["y"] = np.asarray(y)
    out["p"] = polarity_to_signed(np.asarray(p))
    return out


def polarity_to_signed(p: np.ndarray) -> np.ndarray:
    """Map bool / {0,1} / {-1,1} polarities to int8 ±1 (values already checked by the reader)."""
    p = np.asarray(p)
    if p.dtype == bool:
        return np.where(p, 1, -1).astype(np.int8)
    return np.where(p > 0, 1, -1).astype(np.int8)


def validate(
    events: np.ndarray,
    sensor_size: tuple[int, int] | None,
    source,
    *,
    allow_empty: bool = False,
) -> None:
    """Raise :class:`EventFileError` for empty, unsorted or out-of-sensor events."""
    if len(events) == 0:
        if allow_empty:
            return
        raise EventFileError(source, "contains no events")
    t = events["t"]
    bad = np.flatnonzero(np.diff(t) < 0)
    if len(bad):
        i = int(bad[0]) + 1
        raise EventFileError(
            source,
            f"timestamps are not sorted: event {i} has t={int(t[i])} µs before event {i - 1} "
            f"(t={int(t[i - 1])} µs); {len(bad)} decreasing step(s) in all (pass sort=True to sort)",
        )
    if sensor_size is not None:
        w, h = sensor_size
        if len(events) and (int(events["x"].max()) >= w or int(events["y"].max()) >= h):
            raise EventFileError(
                source,
                f"event coordinates up to x={int(events['x'].max())}, y={int(events['y'].max())} "
                f"fall outside the {w}x{h} sensor",
            )
