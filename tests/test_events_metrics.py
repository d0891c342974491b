"""Egomotion scores: our direction error and the E-MoFlow paper's own v scoring."""

from __future__ import annotations

import numpy as np

from vision3d.events.metrics import velocity_error_as_emoflow_scores
from vision3d.geometry.metrics import direction_error_deg


def test_emoflow_scoring_forgives_component_signs_and_scale_but_not_magnitude_ratios():
    v_gt = np.array([[1.5, 0.3, 1.5], [1.5, 0.3, 1.5]])
    flipped = np.array([[-1.5, 0.3, 1.5], [3.0, -0.6, -3.0]])  # signs wrong, the second also twice as long
    assert direction_error_deg(flipped, v_gt).min() > 80
    rmse, angle = velocity_error_as_emoflow_scores(flipped, v_gt)
    assert rmse < 1e-12 and angle < 1e-6

    # magnitudes off: the unit estimate (0, 0, 1) is scored as (0, 0, ‖v_gt‖)
    rmse, angle = velocity_error_as_emoflow_scores(np.array([[0.0, 0.0, 1.0]]), v_gt[:1])
    n = np.linalg.norm(v_gt[0])
    expected = np.sqrt(((np.array([0.0, 0.0, n]) - v_gt[0]) ** 2).sum() / 3)
    np.testing.assert_allclose(rmse, expected, rtol=1e-12)
    np.testing.assert_allclose(angle, np.degrees(np.arccos(1.5 / n)), rtol=1e-12)
