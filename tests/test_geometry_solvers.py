"""Weighted Procrustes, PnP and RANSAC recover known poses under noise and outliers; gradients reach weights."""

import torch
from pose_helpers import one_thread  # noqa: F401  (autouse fixture: importing it applies it here)

from vision3d.geometry import (
    dlt_pnp,
    project_points,
    random_rotation,
    ransac_pnp,
    ransac_procrustes,
    weighted_pnp,
    weighted_procrustes,
)
from vision3d.geometry import rotation_angle as _clamped_angle


def rotation_angle(R1, R2):
    return _clamped_angle(R1, R2, eps=0.0)  # unclamped: the test wants tiny angles


def _pose(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    R = random_rotation(1, max_angle=0.6, generator=g, dtype=dtype)[0]
    t = torch.tensor([0.3, -0.2, 0.1], dtype=dtype)
    return R, t


def _scene(n=200, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 3, generator=g, dtype=dtype) * torch.tensor([2.0, 2.0, 1.5], dtype=dtype) + torch.tensor([-1, -1, 3.0], dtype=dtype)
    return X


def test_weighted_procrustes_recovers_transform_with_noise_and_outliers():
    R, t = _pose()
    src = _scene()
    dst = src @ R.T + t + 0.001 * torch.randn_like(src)
    dst[:40] += torch.randn(40, 3, dtype=dst.dtype)  # outliers
    w = torch.ones(200, dtype=src.dtype)
    w[:40] = 0.0  # the weights know the outliers
    R_hat, t_hat, s = weighted_procrustes(src[None], dst[None], w[None])
    assert rotation_angle(R_hat[0], R) < 2e-3
    assert (t_hat[0] - t).norm() < 5e-3
    assert torch.allclose(s, torch.ones(1, dtype=s.dtype))
    # unweighted: the outliers pull it off
    R_bad, _, _ = weighted_procrustes(src[None], dst[None])
    assert rotation_angle(R_bad[0], R) > 5 * rotation_angle(R_hat[0], R)
    # similarity with scale
    _, _, s2 = weighted_procrustes(src[None], 2.5 * (src @ R.T + t)[None], with_scale=True)
    assert abs(float(s2) - 2.5) < 1e-6


def test_pnp_recovers_pose_exact_and_noisy():
    R, t = _pose(1)
    X = _scene(seed=1)
    K = torch.tensor([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]], dtype=X.dtype)
    pix, _ = project_points((X @ R.T + t)[None], K[None])
    R0, t0 = dlt_pnp(X[None], ((pix - K[:2, 2]) / 300.0))
    assert rotation_angle(R0[0], R) < 1e-5 and (t0[0] - t).norm() < 1e-5
    noisy = pix + 0.5 * torch.randn_like(pix)
    R1, t1 = weighted_pnp(X[None], noisy, K[None], iterations=5)
    assert torch.rad2deg(rotation_angle(R1[0], R)) < 0.3
    assert (t1[0] - t).norm() < 0.02


def test_ransac_pnp_ignores_outliers():
    R, t = _pose(2)
    X = _scene(n=300, seed=2)
    K = torch.tensor([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]], dtype=X.dtype)
    pix, _ = project_points((X @ R.T + t)[None], K[None])
    pix = pix[0] + 0.3 * torch.randn(300, 2, dtype=X.dtype)
    g = torch.Generator().manual_seed(0)
    out = torch.rand(300, generator=g) < 0.4
    pix[out] = torch.rand(int(out.sum()), 2, generator=g, dtype=X.dtype) * torch.tensor([320.0, 240.0], dtype=X.dtype)
    res = ransac_pnp(X, pix, K, threshold_px=2.0, num_hypotheses=256, generator=g)
    assert res.success
    assert torch.rad2deg(rotation_angle(res.R, R)) < 0.5
    recall = (res.inliers & ~out).sum() / (~out).sum()
    precision = (res.inliers & ~out).sum() / res.inliers.sum()
    assert recall > 0.9 and precision > 0.95
    # plain least squares on everything is far off
    R_ls, _ = weighted_pnp(X[None], pix[None], K[None])
    assert torch.rad2deg(rotation_angle(R_ls[0], R)) > 2.0


def test_ransac_procrustes_ignores_outliers():
    R, t = _pose(3)
    src = _scene(seed=3)
    dst = src @ R.T + t
    dst[::3] += 0.5 * torch.randn_like(dst[::3])
    res = ransac_procrustes(src, dst, threshold=0.01, generator=torch.Generator().manual_seed(0))
    assert res.success and rotation_angle(res.R, R) < 1e-6 and (res.t - t).norm() < 1e-6


def test_pnp_refit_is_differentiable_in_weights():
    R, t = _pose(4)
    X = _scene(n=12, seed=4)
    K = torch.tensor([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]], dtype=X.dtype)
    pix, _ = project_points((X @ R.T + t)[None], K[None])
    pix = pix + torch.randn_like(pix)
    w = torch.rand(1, 12, dtype=X.dtype).add(0.5).requires_grad_()

    def f(w):
        R_hat, t_hat = weighted_pnp(X[None], pix, K[None], w, iterations=2)
        return torch.cat([R_hat.reshape(-1), t_hat.reshape(-1)])

    assert torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-4)


def test_procrustes_gradient_matches_finite_differences():
    src = _scene(n=10, seed=5)[None]
    dst = (src + 0.05 * torch.randn_like(src))
    w = torch.rand(1, 10, dtype=src.dtype).add(0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda w: weighted_procrustes(src, dst, w)[0], (w,), eps=1e-6, atol=1e-5)
