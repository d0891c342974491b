"""The fused Numba projection (forward and hand-written backward) held to the autograd torch version."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("numba")

from vision3d.render.projection import fully_fused_projection  # noqa: E402
from vision3d.render.projection_numba import fused_projection_numba  # noqa: E402


def scene(n=400, n_cams=3, seed=0, dtype=torch.float64):
    """Gaussians around the cameras' view: some behind, some far off-axis (clamped Jacobian), odd shapes."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * torch.tensor([2.0, 1.5, 1.5], dtype=dtype)
    means[:, 2] += 2.5
    quats = torch.randn(n, 4, generator=g, dtype=dtype) * 3  # not normalised
    scales = torch.exp(torch.randn(n, 3, generator=g, dtype=dtype) - 2.5)
    viewmats = torch.eye(4, dtype=dtype).repeat(n_cams, 1, 1)
    for c in range(n_cams):
        ang = 0.3 * c
        viewmats[c, 0, 0] = viewmats[c, 2, 2] = torch.cos(torch.tensor(ang))
        viewmats[c, 0, 2], viewmats[c, 2, 0] = torch.sin(torch.tensor(ang)), -torch.sin(torch.tensor(ang))
        viewmats[c, :3, 3] = torch.tensor([0.1 * c, -0.2, 0.3 * c])
    Ks = torch.tensor([[60.0, 0, 41.0], [0, 55.0, 29.0], [0, 0, 1]], dtype=dtype).repeat(n_cams, 1, 1)
    return means, quats, scales, viewmats, Ks


def run(fn, means, quats, scales, viewmats, Ks, weights, **kw):
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales)]
    radii, means2d, depths, conics, comps = fn(*params, viewmats, Ks, 80, 60, calc_compensations=True, **kw)
    w2, wd, wc, wk = weights
    loss = (means2d * w2).sum() + (depths * wd).sum() + (conics * wc).sum() + (comps * wk).sum()
    loss.backward()
    return (radii, means2d.detach(), depths.detach(), conics.detach(), comps.detach()), [p.grad for p in params]


@pytest.mark.parametrize("kw", [{}, {"eps2d": 0.0, "radius_clip": 2.0, "near_plane": 0.5}])
def test_fused_projection_matches_autograd(kw):
    inputs = scene()
    C, N = inputs[3].shape[0], inputs[0].shape[0]
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(C, N, 2, generator=g, dtype=torch.float64), torch.randn(C, N, generator=g, dtype=torch.float64),
               torch.randn(C, N, 3, generator=g, dtype=torch.float64) * 10, torch.randn(C, N, generator=g, dtype=torch.float64)]  # fmt: skip
    out_t, grads_t = run(fully_fused_projection, *inputs, weights, **kw)
    out_n, grads_n = run(fused_projection_numba, *inputs, weights, **kw)
    radii = out_t[0]
    assert (radii == 0).any() and (radii > 0).sum() > N  # culled and visible entries both exercised
    assert torch.equal(out_n[0], radii)
    for a, b in zip(out_n[1:], out_t[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for name, a, b in zip(("means", "quats", "scales"), grads_n, grads_t, strict=True):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9, msg=name)


def test_fused_projection_float32_and_behind_camera():
    means, quats, scales, viewmats, Ks = scene(n=50, n_cams=1, dtype=torch.float32)
    means[:10, 2] = -1.0  # behind the camera: culled, finite, zero gradient except through depth
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales)]
    radii, means2d, depths, conics, _ = fused_projection_numba(*params, viewmats, Ks, 80, 60)
    assert means2d.dtype == torch.float32 and radii.dtype == torch.int32
    assert (radii[0, :10] == 0).all() and torch.isfinite(means2d).all() and torch.isfinite(conics).all()
    (means2d.sum() + conics.sum()).backward()
    assert (params[0].grad[:10] == 0).all() and (params[2].grad[:10] == 0).all()
    assert params[0].grad[10:].abs().sum() > 0
