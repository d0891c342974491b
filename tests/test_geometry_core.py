"""SO(3)/SE(3), cameras: known answers, round trips, argument checks, gradients vs finite differences."""

import math

import numpy as np
import pytest
import torch

from vision3d.geometry import (
    invert_pose,
    make_pose,
    opengl_to_opencv,
    pixel_grid,
    project_points,
    random_rotation,
    relative_pose,
    rotation_6d_to_matrix,
    rotation_angle,
    scale_intrinsics,
    skew,
    so3_exp,
    so3_log,
    svd_orthogonalize,
    transform_points,
    unit_depth_rays,
    unproject_depth,
    vector_angle,
)


def test_so3_exp_known_rotation_and_log_roundtrip():
    R = so3_exp(torch.tensor([0.0, 0.0, math.pi / 2]))
    assert torch.allclose(R, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)
    omega = torch.randn(10, 3) * 0.8
    assert torch.allclose(so3_log(so3_exp(omega)), omega, atol=1e-5)


def test_skew_is_cross_product():
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.allclose((skew(a) @ b[..., None])[..., 0], torch.cross(a, b, dim=-1), atol=1e-6)


def test_rotation_and_vector_angles():
    R1 = random_rotation(4)
    angle = torch.tensor([0.1, 0.5, 1.0, 2.0])
    axis = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    R2 = R1 @ so3_exp(axis * angle[:, None])
    assert torch.allclose(rotation_angle(R1, R2), angle, atol=1e-4)
    assert torch.allclose(vector_angle(torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 2.0, 0])), torch.tensor(math.pi / 2))
    # no folding: opposite directions are pi apart
    assert vector_angle(torch.tensor([1.0, 0, 0]), torch.tensor([-3.0, 0, 0])) > 3.14


def test_svd_orthogonalize_and_6d():
    R = random_rotation(6, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(svd_orthogonalize(R.reshape(6, 9)), R, atol=1e-5)
    noisy = svd_orthogonalize(R + 0.05 * torch.randn_like(R))
    assert torch.allclose(noisy.transpose(1, 2) @ noisy, torch.eye(3).expand(6, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(noisy), torch.ones(6), atol=1e-5)
    assert torch.allclose(rotation_6d_to_matrix(R[:, :2].reshape(6, 6)), R, atol=1e-5)


def test_se3_inverse_relative_and_conventions():
    T = make_pose(random_rotation(3), torch.randn(3, 3))
    assert torch.allclose(invert_pose(T) @ T, torch.eye(4).expand(3, 4, 4), atol=1e-5)
    c1, c2 = T[0], T[1]
    rel = relative_pose(c1, c2)
    X2 = torch.randn(7, 3)
    # a world point seen from camera 2, mapped to camera 1 by the relative pose
    world = transform_points(c2, X2)
    assert torch.allclose(transform_points(rel, X2), transform_points(invert_pose(c1), world), atol=1e-5)
    # OpenGL camera looks down -Z: a point in front has z > 0 in OpenCV axes
    c2w = torch.eye(4)
    X = transform_points(invert_pose(opengl_to_opencv(c2w)), torch.tensor([[0.0, 0.0, -2.0]]))
    assert torch.allclose(X, torch.tensor([[0.0, 0.0, 2.0]]))


def test_unproject_project_roundtrip_and_pixel_centres():
    K = torch.tensor([[[20.0, 0, 8], [0, 22.0, 6], [0, 0, 1]]])
    depth = torch.rand(1, 12, 16) + 1.0
    pts = unproject_depth(depth, K)
    pix, z = project_points(pts.reshape(1, -1, 3), K)
    assert torch.allclose(pix, pixel_grid(12, 16).reshape(1, -1, 2), atol=1e-4)
    assert torch.allclose(z, depth.reshape(1, -1))
    rays = unit_depth_rays(pixel_grid(12, 16).reshape(1, -1, 2), K)  # the same points at z = 1
    assert torch.allclose(rays, pts.reshape(1, -1, 3) / depth.reshape(1, -1, 1), atol=1e-6)
    assert torch.allclose(rays[..., 2], torch.ones(1, 12 * 16))
    assert torch.allclose(pixel_grid(2, 2)[0, 0], torch.tensor([0.5, 0.5]))
    K2 = scale_intrinsics(K, 0.5, 0.5)
    assert torch.allclose(K2[0, :2, 2], torch.tensor([4.0, 3.0]))


def test_argument_checks_name_the_argument():
    with pytest.raises(ValueError, match="omega"):
        so3_exp(torch.randn(4, 2))
    with pytest.raises(ValueError, match="K must have shape"):
        project_points(torch.randn(2, 5, 3), torch.eye(3)[None])


def test_rotation_angle_gradient_matches_finite_differences():
    torch.manual_seed(0)
    omega = (torch.randn(2, 3, dtype=torch.float64) * 0.5).requires_grad_()
    R_ref = random_rotation(2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda w: rotation_angle(so3_exp(w), R_ref), (omega,))
    m = torch.randn(2, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: svd_orthogonalize(x), (m,))
    np.testing.assert_allclose(1.0, 1.0)
