"""ReLoc3r's pose errors and error_auc on hand-computed values."""

import math

import numpy as np
import pytest
import torch

from vision3d.geometry import (
    error_auc,
    relative_pose_errors,
    rotation_error_deg,
    so3_exp,
    translation_angle_error_deg,
)


def test_rotation_error_is_rodrigues_angle_in_degrees():
    R_gt = so3_exp(torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)).numpy()
    R_pred = R_gt @ so3_exp(torch.tensor([0.0, 0.0, math.radians(7.0)], dtype=torch.float64)).numpy()
    assert rotation_error_deg(R_pred, R_gt) == pytest.approx(7.0, abs=1e-6)
    assert rotation_error_deg(np.eye(3), so3_exp(torch.tensor([math.pi - 1e-4, 0, 0], dtype=torch.float64)).numpy()) == pytest.approx(180, abs=0.01)


def test_translation_error_is_not_folded_and_scale_free():
    assert translation_angle_error_deg(np.array([1.0, 0, 0]), np.array([5.0, 0, 0])) == pytest.approx(0.0)
    assert translation_angle_error_deg(np.array([1.0, 0, 0]), np.array([-1.0, 0, 0])) == pytest.approx(180.0)
    assert translation_angle_error_deg(np.array([1.0, 0, 0]), np.array([1.0, 1.0, 0])) == pytest.approx(45.0)
    assert translation_angle_error_deg(np.zeros(3), np.array([1.0, 0, 0])) == 180.0


def test_relative_pose_errors_batch():
    T = np.tile(np.eye(4), (2, 1, 1))
    T2 = T.copy()
    T2[:, :3, 3] = [[1, 0, 0], [0, 1, 0]]
    T[:, :3, 3] = [[1, 0, 0], [1, 0, 0]]
    r, t = relative_pose_errors(T, T2)
    np.testing.assert_allclose(r, [0, 0], atol=1e-6)
    np.testing.assert_allclose(t, [0, 90], atol=1e-6)


def test_error_auc_hand_computed():
    # max(rot, trans) = [1, 3, 8, 30]; recall steps 0, .25, .5, .75, 1 at errors 0, 1, 3, 8, 30
    rot = np.array([1.0, 0.5, 8.0, 2.0])
    trans = np.array([0.2, 3.0, 1.0, 30.0])
    auc = error_auc(rot, trans, [5, 10, 20])
    # @5: trapezoid over (0,0) (1,.25) (3,.5) (5,.5): .125 + .75 + 1.0 = 1.875 -> /5
    assert auc["auc@5"] == pytest.approx(1.875 / 5)
    # @10: (0,0)(1,.25)(3,.5)(8,.75)(10,.75): .125 + .75 + 3.125 + 1.5 = 5.5 -> /10
    assert auc["auc@10"] == pytest.approx(0.55)
    # @20: add (20, .75) instead of (10, .75): 5.5 - 1.5 + 9.0 = 13.0 -> /20
    assert auc["auc@20"] == pytest.approx(0.65)
    # all perfect -> 1.0 ; all failed -> 0.0
    assert error_auc(np.zeros(3), np.zeros(3), [5])["auc@5"] == pytest.approx(1.0)
    assert error_auc(np.full(3, 90.0), np.zeros(3), [5])["auc@5"] == 0.0


def test_error_auc_rejects_mismatched_input():
    with pytest.raises(ValueError, match="as many"):
        error_auc([1.0, 2.0], [1.0])
