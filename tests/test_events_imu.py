"""IMU-to-camera axis mapping chosen from data."""

from __future__ import annotations

import numpy as np

from vision3d.events.imu import fit_axis_map, gravity_axis_map, signed_axis_permutations


def test_signed_permutations_are_the_24_rotations():
    perms = signed_axis_permutations()
    assert perms.shape == (24, 3, 3)
    assert np.allclose([np.linalg.det(m) for m in perms], 1.0)
    assert len({m.tobytes() for m in perms}) == 24


def test_fit_axis_map_recovers_a_permutation_under_noise_and_bias():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2, 200)
    w_cam = np.stack([np.sin(3 * t), 0.5 * np.cos(2 * t), 0.3 * np.sin(5 * t + 1)], 1)
    true = signed_axis_permutations()[7]
    gyro = (
        w_cam @ true + np.array([0.01, -0.02, 0.005]) + rng.normal(0, 0.05, w_cam.shape)
    )  # R^T ω + bias + noise
    m, r = fit_axis_map(w_cam, gyro)
    np.testing.assert_array_equal(m, true)
    assert r > 0.9


def test_gravity_axis_map_puts_up_on_minus_y():
    m, note = gravity_axis_map(np.array([[0.03, -0.97, 0.25]]))  # DAVIS346 at rest, tilted 15°
    np.testing.assert_array_equal(m, np.eye(3))
    m, _ = gravity_axis_map(np.array([[0.0, 0.1, 1.0]]))  # IMU z reads up
    assert np.allclose(m @ np.array([0.0, 0.0, 1.0]), [0, -1, 0])
    assert "reads up" in note
