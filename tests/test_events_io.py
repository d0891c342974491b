"""Event file I/O: round trips through every writable format, each bad-file error, real recordings."""

from __future__ import annotations

import h5py
import hdf5plugin
import numpy as np
import pytest

from vision3d.events.io import read_events, read_imu, write_events
from vision3d.events.stream import EventFileError, EventStream, make_events
from vision3d.events.windows import count_windows, time_windows


@pytest.fixture
def stream() -> EventStream:
    rng = np.random.default_rng(1)
    n = 500
    t = np.sort(rng.integers(1_000_000, 1_200_000, n))
    ev = make_events(t, rng.integers(0, 40, n), rng.integers(0, 30, n), rng.choice([-1, 1], n))
    return EventStream(ev, (40, 30))


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("ev.txt", None),
        ("ev.npy", None),
        ("ev.npz", None),
        ("ev.h5", "mvsec"),
        ("ev.h5", "dsec"),
        ("ev.aedat4", None),
        ("ev.es", None),
    ],
)
def test_round_trip(tmp_path, stream, name, fmt):
    path = write_events(tmp_path / name, stream, fmt)
    back = read_events(path, sensor_size=stream.sensor_size)
    np.testing.assert_array_equal(back.events, stream.events)
    assert back.sensor_size == stream.sensor_size
    if fmt == "dsec":
        with h5py.File(path) as f:
            assert set(f["events"]) == {"x", "y", "t", "p"}
            assert f["events/t"].dtype == np.uint32 and f["events/p"][()].max() == 1
            ms = f["ms_to_idx"][()].astype(np.int64)
            t_rel = f["events/t"][()]
            assert int(f["t_offset"][()]) == stream.t[0]
            # ms_to_idx[i] is the first event at or after i ms
            assert all(
                t_rel[ms[i]] >= 1000 * i and (ms[i] == 0 or t_rel[ms[i] - 1] < 1000 * i)
                for i in range(len(ms))
            )
            assert (
                f["events/x"].id.get_create_plist().get_filter(0)[0] == hdf5plugin.BLOSC_ID
            )  # Blosc, as DSEC
    if fmt == "mvsec":
        with h5py.File(path) as f:
            data = f["davis/left/events"][()]
            assert data.shape == (len(stream), 4) and set(np.unique(data[:, 3])) == {-1.0, 1.0}
            np.testing.assert_allclose(data[:, 2], stream.t * 1e-6)


def test_sensor_size_inferred_and_stored(tmp_path, stream):
    back = read_events(write_events(tmp_path / "e.npz", stream))
    assert back.sensor_size == (40, 30)  # npz stores it
    back = read_events(write_events(tmp_path / "e.txt", stream))
    assert back.sensor_size == (int(stream.x.max()) + 1, int(stream.y.max()) + 1)


def test_ecd_text_layout(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("0.000100 3 4 1\n0.000250 5 6 0\n")
    s = read_events(path)
    assert list(s.t) == [100, 250] and list(s.x) == [3, 5] and list(s.y) == [4, 6] and list(s.p) == [1, -1]


def _expect(path, *words):
    with pytest.raises(EventFileError) as err:
        read_events(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_bad_text_files(tmp_path):
    p = tmp_path / "truncated.txt"
    p.write_text("0.1 1 2 1\n0.2 3 4 0\n0.3 5\n")
    _expect(p, "truncated")
    p = tmp_path / "three_cols.txt"
    p.write_text("0.1 1 2\n0.2 3 4\n")
    _expect(p, "4 columns", "found 3")
    p = tmp_path / "unsorted.txt"
    p.write_text("0.3 1 2 1\n0.2 3 4 0\n")
    _expect(p, "not sorted", "event 1")
    assert len(read_events(p, sort=True)) == 2
    p = tmp_path / "empty.txt"
    p.write_text("")
    _expect(p, "no events")
    p = tmp_path / "swapped.txt"  # x t y p: timestamps where pixels should be
    p.write_text("1 0.1 2 1\n3 0.2 4 0\n")
    _expect(p, "non-integer pixel")
    p = tmp_path / "polarity.txt"
    p.write_text("0.1 1 2 7\n")
    _expect(p, "polarity")
    _expect(tmp_path / "missing.txt", "no such file")


def test_bad_binary_files(tmp_path, stream):
    raw = write_events(tmp_path / "good.h5", stream, "dsec").read_bytes()
    p = tmp_path / "trunc.h5"
    p.write_bytes(raw[: len(raw) // 2])
    _expect(p, "HDF5")
    p = tmp_path / "wrongcols.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("davis/left/events", data=np.zeros((5, 3)))
    _expect(p, "N×4")
    p = tmp_path / "ragged.h5"
    with h5py.File(p, "w") as f:
        for k, n in zip("xytp", (5, 5, 4, 5), strict=True):
            f.create_dataset(f"events/{k}", data=np.arange(n, dtype=np.uint32))
    _expect(p, "different lengths")
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("foo", data=np.zeros(3))
    _expect(p, "neither")
    npy = write_events(tmp_path / "good.npy", stream).read_bytes()
    p = tmp_path / "trunc.npy"
    p.write_bytes(npy[: len(npy) - 100])
    _expect(p, "truncated")
    p = tmp_path / "plain.npy"
    np.save(p, np.zeros((4, 4)))
    _expect(p, "structured array")
    p = tmp_path / "nofield.npy"
    np.save(p, np.zeros(3, dtype=[("x", int), ("y", int), ("t", int)]))
    _expect(p, "lacks field", "'p'")
    p = tmp_path / "unsorted.npz"
    s2 = EventStream(stream.events[::-1].copy(), stream.sensor_size)
    np.savez(
        p,
        events=np.array(
            s2.events[["x", "y", "t", "p"]].tolist(), dtype=[("x", int), ("y", int), ("t", int), ("p", int)]
        ),
    )
    _expect(p, "not sorted")
    p = tmp_path / "trunc.aedat4"
    p.write_bytes(write_events(tmp_path / "g.aedat4", stream).read_bytes()[:300])
    _expect(p, "truncated")
    _expect(tmp_path / "x.xyz", "unknown event file type") if (tmp_path / "x.xyz").write_text("1") else None


def test_out_of_sensor(tmp_path, stream):
    path = write_events(tmp_path / "e.npy", stream)
    with pytest.raises(EventFileError, match="outside the 20x30 sensor"):
        read_events(path, sensor_size=(20, 30))


def test_windows(stream):
    assert len(time_windows(stream, 50_000)) == 3  # only whole windows: the last 49 ms are dropped
    wins = time_windows(stream, 50_000, t_start_us=1_000_000, t_end_us=1_200_000)
    assert len(wins) == 4 and sum(len(w) for w in wins) == len(stream)
    for w in wins:
        ts = stream.t[w.slice]
        assert ts.min() >= w.t_start_us and ts.max() < w.t_end_us
    half = time_windows(stream, 50_000, 25_000, t_start_us=1_000_000, t_end_us=1_200_000)
    assert len(half) == 7
    cw = count_windows(stream, 120)
    assert [len(w) for w in cw] == [120] * 4
    assert len(count_windows(stream, 120, keep_partial=True)[-1]) == 20
    with pytest.raises(EventFileError, match="fewer than one window"):
        count_windows(stream, 1000)


def test_empty_window_error(tmp_path):
    ev = make_events([0, 10, 20, 500_000, 500_010], [1] * 5, [1] * 5, [1] * 5)
    s = read_events(write_events(tmp_path / "gap.npz", EventStream(ev, (4, 4))))
    with pytest.raises(EventFileError) as err:
        time_windows(s, 100_000)
    assert (
        "gap.npz" in str(err.value)
        and "empty window" in str(err.value)
        and "[100000, 200000)" in str(err.value)
    )
    assert len(time_windows(s, 100_000, skip_empty=True, t_end_us=600_000)) == 2


# --- real recordings (../shared/data/events) --------------------------------------------
@pytest.mark.parametrize(
    "name,size,count",
    [
        ("davis346.aedat4", (346, 260), 78_830),
        ("evt3.raw", (1280, 720), 1_218_618),
        ("dvs.es", (320, 240), 473_225),
    ],
)
def test_real_recordings(shared_data, name, size, count):
    s = read_events(shared_data / "events" / name)
    assert s.sensor_size == size and len(s) == count
    assert np.all(np.diff(s.t) >= 0) and set(np.unique(s.p)) == {-1, 1}
    assert s.x.max() < size[0] and s.y.max() < size[1]
    # real scenes, not noise: events cluster (event count image far from uniform)
    img = np.bincount(s.y.astype(np.int64) * size[0] + s.x, minlength=size[0] * size[1])
    assert img.std() > 0.5 * img.mean()


def test_davis_imu(shared_data):
    path = shared_data / "events" / "davis346.aedat4"
    imu = read_imu(path)
    s = read_events(path)
    assert imu["gyro"].shape == (len(imu["t"]), 3) and len(imu["t"]) > 2000
    assert np.all(np.diff(imu["t"]) > 0)
    # accelerometer measures gravity (~1 g) on a camera at rest
    assert abs(np.linalg.norm(imu["accel"], axis=1).mean() - 1.0) < 0.1
    # the camera is handheld-static here: gyro is its bias, below 2 deg/s
    assert np.abs(np.rad2deg(imu["gyro"])).mean(0).max() < 2.0
    assert abs(int(imu["t"][0]) - int(s.t[0])) < 100_000
