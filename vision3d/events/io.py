"""Read and write event files as the field stores them.

==========================  =====================================================  =========
format (``fmt``)            layout                                                 via
==========================  =====================================================  =========
``txt`` (``.txt``)          ECD: one event a line, ``t x y p`` (t in s, p 0/1)     numpy
``npy`` / ``npz``           tonic structured array, fields ``x, y, t, p`` (t µs);  numpy
                            ``.npz`` also stores ``sensor_size``
``mvsec`` (``.h5/.hdf5``)   ``davis/left/events`` N×4 float ``[x, y, t s, p ±1]``  h5py
``dsec`` (``.h5/.hdf5``)    ``events/{x,y,t µs,p 0/1}``, ``ms_to_idx``,            h5py +
                            ``t_offset``; Blosc-compressed                         hdf5plugin
``aedat4``/``raw``/``dat``  iniVation AEDAT 4, Prophesee EVT 2/3 and DAT,          faery
``es``/``csv``              Event Stream, CSV
==========================  =====================================================  =========

HDF5 files are told apart by their groups (``events/`` is DSEC, ``davis/`` is MVSEC).
:func:`read_imu` gives the DAVIS IMU through the ``aedat`` package (gyroscope in rad/s).

Every reader checks what it read and raises :class:`~vision3d.events.stream.EventFileError`
naming the file and the problem: truncated files, wrong columns or fields, unsorted
timestamps (unless ``sort=True``), no events, coordinates outside the sensor, unknown
polarity values. Known limit: an Event Stream (``.es``) file cut at an event boundary reads
as a shorter valid file (the format stores no length), so that truncation cannot be seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vision3d.events.stream import EVENT_DTYPE, EventFileError, EventStream, make_events, validate

FAERY_SUFFIXES = {".aedat4", ".aedat", ".raw", ".dat", ".es", ".csv"}
TONIC_DTYPE = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])


def detect_format(path: str | Path) -> str:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return "txt"
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    if suffix in (".h5", ".hdf5"):
        if not path.exists():
            return "dsec"
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "events" in f:
                    return "dsec"
                if "davis" in f:
                    return "mvsec"
        except OSError as err:
            raise EventFileError(path, f"cannot be opened as HDF5 (truncated or not HDF5?): {err}") from err
        raise EventFileError(path, "HDF5 file has neither 'events/' (DSEC) nor 'davis/' (MVSEC) groups")
    if suffix in FAERY_SUFFIXES:
        return suffix[1:]
    raise EventFileError(
        path,
        f"unknown event file type {suffix!r} (know .txt .npy .npz .h5 .hdf5 "
        + " ".join(sorted(FAERY_SUFFIXES))
        + ")",
    )


def read_events(
    path: str | Path,
    fmt: str | None = None,
    sensor_size: tuple[int, int] | None = None,
    *,
    sort: bool = False,
    camera: str = "left",
) -> EventStream:
    """Read an event file into an :class:`EventStream` (format from the suffix unless ``fmt``).

    ``sensor_size`` (width, height) overrides the file's; files that store none (text,
    MVSEC, DSEC) otherwise get ``max coordinate + 1`` — MVSEC's DAVIS is 346×260, DSEC's
    Prophesee 640×480, pass these when a window may not reach the edges.
    """
    path = Path(path)
    if not path.exists():
        raise EventFileError(path, "no such file")
    fmt = fmt or detect_format(path)
    readers = {
        "txt": _read_txt,
        "npy": _read_numpy,
        "npz": _read_numpy,
        "mvsec": _read_mvsec,
        "dsec": _read_dsec,
    }
    if fmt in readers:
        if fmt == "mvsec":
            events, size, meta = _read_mvsec(path, camera)
        else:
            events, size, meta = readers[fmt](path)
    elif fmt in {s[1:] for s in FAERY_SUFFIXES}:
        events, size, meta = _read_faery(path)
    else:
        raise EventFileError(path, f"unknown format {fmt!r}")
    if sort and len(events):
        events = events[np.argsort(events["t"], kind="stable")]
    if sensor_size is None:
        if size is None:
            if len(events) == 0:
                raise EventFileError(path, "contains no events")
            size = (int(events["x"].max()) + 1, int(events["y"].max()) + 1)
        sensor_size = size
    validate(events, sensor_size, path)
    return EventStream(events, sensor_size, str(path), {"format": fmt, **meta})


def write_events(path: str | Path, stream: EventStream, fmt: str | None = None) -> Path:
    """Write ``stream`` in the format of ``path``'s suffix (``.h5`` means DSEC unless ``fmt='mvsec'``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or detect_format_for_writing(path)
    ev = stream.events
    if fmt == "txt":
        t = ev["t"].astype(np.float64) * 1e-6
        data = np.column_stack([t, ev["x"], ev["y"], (ev["p"] > 0).astype(np.int64)])
        np.savetxt(path, data, fmt=["%.6f", "%d", "%d", "%d"])
    elif fmt in ("npy", "npz"):
        out = np.empty(len(ev), TONIC_DTYPE)
        out["x"], out["y"], out["t"], out["p"] = ev["x"], ev["y"], ev["t"], (ev["p"] > 0)
        if fmt == "npy":
            np.save(path, out)
        else:
            np.savez(path, events=out, sensor_size=np.array(stream.sensor_size))
    elif fmt == "mvsec":
        import h5py

        data = np.column_stack([ev["x"], ev["y"], ev["t"] * 1e-6, ev["p"]]).astype(np.float64)
        with h5py.File(path, "w") as f:
            f.create_dataset("davis/left/events", data=data)
    elif fmt == "dsec":
        _write_dsec(path, stream)
    elif fmt in ("aedat4", "es", "raw", "dat", "csv"):
        import faery

        arr = np.zeros(len(ev), faery.EVENTS_DTYPE)
        arr["t"], arr["x"], arr["y"], arr["on"] = ev["t"], ev["x"], ev["y"], ev["p"] > 0
        faery.events_stream_from_array(arr, dimensions=stream.sensor_size).to_file(path, zero_t0=False)
    else:
        raise EventFileError(path, f"cannot write format {fmt!r}")
    return path


def detect_format_for_writing(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return "dsec"
    return detect_format(path)


# --- readers --------------------------------------------------------------------------
def _read_txt(path: Path):
    with open(path, "rb") as f:
        first = f.readline().split()
    if not first:
        raise EventFileError(path, "contains no events")
    if len(first) and not _is_number(first[0]):
        raise EventFileError(
            path, f"first line {b' '.join(first).decode(errors='replace')!r} is not 't x y p' numbers"
        )
    if first and len(first) != 4:
        raise EventFileError(path, f"expected 4 columns 't x y p' (ECD), found {len(first)}")
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise EventFileError(path, f"malformed or truncated line: {err}") from err
    if data.size == 0:
        raise EventFileError(path, "contains no events")
    if data.shape[1] != 4:
        raise EventFileError(path, f"expected 4 columns 't x y p' (ECD), found {data.shape[1]}")
    return _from_columns(path, data[:, 0] * 1e6, data[:, 1], data[:, 2], data[:, 3]), None, {}


def _is_number(token: bytes) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_numpy(path: Path):
    size = None
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise EventFileError(path, f"cannot be read as numpy (truncated?): {err}") from err
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if "events" not in loaded.files:
                raise EventFileError(path, f"npz has no 'events' array (has {loaded.files})")
            try:
                arr = loaded["events"]
            except (ValueError, OSError, EOFError) as err:
                raise EventFileError(path, f"'events' array is unreadable (truncated?): {err}") from err
            if "sensor_size" in loaded.files:
                size = tuple(int(v) for v in loaded["sensor_size"][:2])
    else:
        arr = loaded
    if arr.dtype.names is None:
        raise EventFileError(
            path,
            f"expected a structured array with fields x, y, t, p (tonic), got {arr.dtype} "
            f"of shape {arr.shape}",
        )
    missing = [k for k in ("x", "y", "t", "p") if k not in arr.dtype.names]
    if missing:
        raise EventFileError(path, f"structured array lacks field(s) {missing} (has {list(arr.dtype.names)})")
    return _from_columns(path, arr["t"], arr["x"], arr["y"], arr["p"]), size, {}


def _open_h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise EventFileError(path, f"cannot be opened as HDF5 (truncated or not HDF5?): {err}") from err


def _read_mvsec(path: Path, camera: str = "left"):
    key = f"davis/{camera}/events"
    with _open_h5(path) as f:
        if key not in f:
            raise EventFileError(path, f"MVSEC file lacks dataset {key!r}")
        try:
            data = f[key][()]
        except OSError as err:
            raise EventFileError(path, f"dataset {key!r} is unreadable (truncated?): {err}") from err
    if data.ndim != 2 or data.shape[1] != 4:
        raise EventFileError(path, f"{key!r} must be N×4 [x, y, t, p], has shape {data.shape}")
    return _from_columns(path, data[:, 2] * 1e6, data[:, 0], data[:, 1], data[:, 3]), None, {}


def _read_dsec(path: Path):
    import hdf5plugin  # noqa: F401  (registers the Blosc filter DSEC files use)

    with _open_h5(path) as f:
        missing = [k for k in ("x", "y", "t", "p") if f"events/{k}" not in f]
        if missing:
            raise EventFileError(path, f"DSEC file lacks dataset(s) {['events/' + k for k in missing]}")
        try:
            cols = {k: f[f"events/{k}"][()] for k in ("x", "y", "t", "p")}
            t_offset = int(f["t_offset"][()]) if "t_offset" in f else 0
            ms_to_idx = f["ms_to_idx"][()] if "ms_to_idx" in f else None
        except OSError as err:
            raise EventFileError(
                path, f"events are unreadable (truncated or missing Blosc filter?): {err}"
            ) from err
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise EventFileError(path, f"events/x,y,t,p have different lengths {lengths} (truncated write?)")
    events = _from_columns(path, cols["t"].astype(np.int64) + t_offset, cols["x"], cols["y"], cols["p"])
    meta = {"t_offset": t_offset}
    if ms_to_idx is not None:
        meta["ms_to_idx"] = ms_to_idx
    return events, None, meta


def _write_dsec(path: Path, stream: EventStream) -> None:
    import h5py
    import hdf5plugin

    ev = stream.events
    t_offset = int(ev["t"][0]) if len(ev) else 0
    t_rel = (ev["t"] - t_offset).astype(np.int64)
    if len(t_rel) and t_rel.max() >= 2**32:
        raise EventFileError(
            path, "recording longer than 71 minutes does not fit DSEC's uint32 µs timestamps"
        )
    n_ms = int(t_rel[-1] // 1000) + 1 if len(t_rel) else 0
    ms_to_idx = np.searchsorted(t_rel, np.arange(n_ms) * 1000, side="left").astype(np.uint64)
    comp = hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE)
    with h5py.File(path, "w") as f:
        f.create_dataset("events/x", data=ev["x"].astype(np.uint16), **comp)
        f.create_dataset("events/y", data=ev["y"].astype(np.uint16), **comp)
        f.create_dataset("events/t", data=t_rel.astype(np.uint32), **comp)
        f.create_dataset("events/p", data=(ev["p"] > 0).astype(np.uint8), **comp)
        f.create_dataset("ms_to_idx", data=ms_to_idx, **comp)
        f.create_dataset("t_offset", data=np.int64(t_offset))


def _read_faery(path: Path):
    import faery

    try:
        decoder = faery.events_stream_from_file(path)
        arr = decoder.to_array()
        size = tuple(int(v) for v in decoder.dimensions())
    except Exception as err:  # faery raises RuntimeError/ValueError from Rust; say which file
        raise EventFileError(path, f"faery cannot decode it (truncated or corrupt?): {err}") from err
    events = make_events(arr["t"].astype(np.int64), arr["x"], arr["y"], arr["on"])
    return events, size, {}


def _from_columns(path, t_us, x, y, p) -> np.ndarray:
    for name, col in (("t", t_us), ("x", x), ("y", y), ("p", p)):
        col = np.asarray(col)
        if col.dtype.kind == "f" and not np.all(np.isfinite(col)):
            raise EventFileError(path, f"column {name} has non-finite values (truncated line?)")
    x, y, p = np.asarray(x), np.asarray(y), np.asarray(p)
    if len(x) and (x.min() < 0 or y.min() < 0):
        raise EventFileError(path, "negative pixel coordinates (are the columns in the wrong order?)")
    if len(x) and (np.any(np.asarray(x) % 1 != 0) or np.any(np.asarray(y) % 1 != 0)):
        raise EventFileError(
            path, "non-integer pixel coordinates (are the columns in the wrong order? expected t x y p)"
        )
    if len(x) and max(x.max(), y.max()) >= 2**16:
        raise EventFileError(path, "pixel coordinates above 65535 (are the columns in the wrong order?)")
    values = set(np.unique(p).tolist()) if p.dtype != bool else {0, 1}
    if not values <= {-1, 0, 1}:
        raise EventFileError(
            path, f"polarity values {sorted(values)[:5]} are not in {{-1, 0, 1}} (wrong columns?)"
        )
    t_us = np.asarray(t_us)
    if t_us.dtype.kind == "f":
        t_us = np.round(t_us)
    return make_events(t_us.astype(np.int64), x.astype(np.uint16), y.astype(np.uint16), p)


# --- IMU ------------------------------------------------------------------------------
def read_imu(path: str | Path) -> dict[str, np.ndarray]:
    """DAVIS IMU samples of an AEDAT 4 file via ``aedat``: ``t`` (µs), ``gyro`` [N,3] rad/s, ``accel`` [N,3] g.

    The DAVIS gyroscope reports deg/s in the IMU chip's own axes; we convert to rad/s and leave the
    axes as recorded (map them to the camera frame before comparing with an egomotion estimate).
    """
    import aedat

    path = Path(path)
    try:
        packets = [pkt["imus"] for pkt in aedat.Decoder(str(path)) if "imus" in pkt]
    except Exception as err:
        raise EventFileError(path, f"aedat cannot decode it (truncated or not AEDAT 4?): {err}") from err
    if not packets:
        raise EventFileError(path, "has no IMU stream")
    imu = np.concatenate(packets)
    gyro = np.stack([imu["gyroscope_x"], imu["gyroscope_y"], imu["gyroscope_z"]], 1).astype(np.float64)
    accel = np.stack([imu["accelerometer_x"], imu["accelerometer_y"], imu["accelerometer_z"]], 1)
    return {"t": imu["t"].astype(np.int64), "gyro": np.deg2rad(gyro), "accel": accel.astype(np.float64)}


__all__ = [
    "EVENT_DTYPE",
    "EventFileError",
    "EventStream",
    "read_events",
    "write_events",
    "read_imu",
    "detect_format",
]
