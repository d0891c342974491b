"""The Numba kernels held to the plain-torch reference: binning, forward, gradients, absgrad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_rasterize import make_scene, render

pytest.importorskip("numba")

from vision3d.render.projection import fully_fused_projection  # noqa: E402
from vision3d.render.tiles import encode_isect_ids, isect_tiles  # noqa: E402
from vision3d.render.tiles_numba import isect_tiles_numba  # noqa: E402

PARAMS = ("means", "quats", "scales", "opacities", "colors")


def forward_backward(scene, backend, weights, **kw):
    params = {k: scene[k].clone().requires_grad_(True) for k in PARAMS}
    colors, alphas, info = render(dict(scene, **params), backend=backend, **kw)
    info["means2d"].retain_grad()
    ((colors * weights).sum() + (alphas * weights[..., :1]).sum()).backward()
    grads = {k: v.grad for k, v in params.items()}
    grads["means2d"] = info["means2d"].grad
    grads["absgrad"] = getattr(info["means2d"], "absgrad", None)
    return colors.detach(), alphas.detach(), grads


def assert_grads_close(a, b, rtol, keys=PARAMS + ("means2d",)):
    for k in keys:
        scale = b[k].abs().max().clamp(min=1e-6)
        torch.testing.assert_close(a[k] / scale, b[k] / scale, atol=rtol, rtol=rtol, msg=k)


def _projected_for_binning():
    """Projected Gaussians over 3 cameras of 70×45 px (partial tiles on both axes), with exact depth ties."""
    scene = make_scene(n=300, n_cams=3, width=70, height=45)
    C, N = 3, 300
    radii, m2d, depths, conics, _ = fully_fused_projection(scene["means"], scene["quats"], scene["scales"] * 3,
                                                           scene["viewmats"], scene["Ks"], 70, 45)  # fmt: skip
    depths = depths.detach().clone()
    depths[:, :50] = 3.0  # exact depth ties: index order must decide
    cam = torch.arange(C).repeat_interleave(N)
    opacities = scene["opacities"][None].expand(C, N).reshape(-1)
    binning = (m2d.detach().reshape(-1, 2), radii.reshape(-1), depths.reshape(-1), cam, C, 70, 45)
    return binning, conics.detach().reshape(-1, 3), opacities


@pytest.mark.parametrize("cull", [False, True], ids=["gsplat square", "ellipse culled"])
def test_binning_identical(cull):
    args, conics, opacities = _projected_for_binning()
    kw = dict(conics=conics, opacities=opacities) if cull else {}
    a, b = isect_tiles(*args, **kw), isect_tiles_numba(*args, **kw)
    assert torch.equal(a.offsets, b.offsets)
    assert torch.equal(a.flatten_ids, b.flatten_ids)
    assert torch.equal(a.tiles_per_gauss, b.tiles_per_gauss)
    assert torch.equal(encode_isect_ids(a, args[2], args[3]), b.isect_ids)
    assert a.flatten_ids.numel() > 700


def _tile_pairs(bins):
    """Set of (tile, Gaussian) pairs of a binning."""
    tiles = torch.repeat_interleave(torch.arange(bins.n_tiles), bins.offsets[1:] - bins.offsets[:-1])
    return set(zip(tiles.tolist(), bins.flatten_ids.tolist(), strict=True))


def test_ellipse_culling_drops_only_tiles_without_a_composited_pixel():
    """Every dropped (tile, Gaussian) pair has α < 1/255 at all of the tile's pixel centres (brute force)."""
    args, conics, opacities = _projected_for_binning()
    m2d, _, _, cam, C, width, height = args
    full = isect_tiles_numba(*args)
    culled = isect_tiles_numba(*args, conics=conics, opacities=opacities)
    kept, every = _tile_pairs(culled), _tile_pairs(full)
    dropped = every - kept
    assert kept <= every
    assert len(dropped) > 0.1 * len(every)  # the square over-covers the ellipses
    tiles_per_cam = full.tile_width * full.tile_height
    for tile, g in dropped:
        tile = tile % tiles_per_cam
        x0, y0 = (tile % full.tile_width) * 16, (tile // full.tile_width) * 16
        ys, xs = torch.meshgrid(torch.arange(y0, min(y0 + 16, height)), torch.arange(x0, min(x0 + 16, width)),
                                indexing="ij")  # fmt: skip
        dx, dy = m2d[g, 0].double() - (xs + 0.5), m2d[g, 1].double() - (ys + 0.5)
        a, b, c = conics[g].double()
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = opacities[g].double() * torch.exp(-sigma)
        assert bool((alpha < 1 / 255).all()), (tile, g)


@pytest.mark.parametrize("packed", [False, True])
def test_numba_matches_torch_float32(packed, monkeypatch):
    from vision3d.render import composite_torch

    monkeypatch.setattr(composite_torch, "CHUNK_ELEMS", 1 << 16)  # many checkpointed chunks
    scene = make_scene(n=400, n_cams=2, d=4, width=56, height=40)
    scene["scales"] = scene["scales"] * 1.5
    bg = torch.rand(2, 4)
    weights = torch.randn(2, 40, 56, 5)
    kw = dict(packed=packed, absgrad=True, render_mode="RGB+ED", backgrounds=bg, rasterize_mode="antialiased")
    c_t, a_t, g_t = forward_backward(scene, "torch", weights, **kw)
    c_n, a_n, g_n = forward_backward(scene, "numba", weights, **kw)
    assert a_t.max() > 0.99
    torch.testing.assert_close(c_n, c_t, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a_n, a_t, atol=1e-5, rtol=1e-5)
    assert_grads_close(g_n, g_t, rtol=1e-3, keys=PARAMS + ("means2d", "absgrad"))


def test_numba_matches_torch_opaque_float64():
    """Near-opaque stacks stress the back-to-front transmittance recovery T_i = T_{i+1} / (1 − α_i)."""
    scene = make_scene(n=120, d=3, dtype=torch.float64, opacity=(0.9, 0.9989), seed=5)
    weights = torch.randn(1, 32, 40, 3, dtype=torch.float64)
    c_t, a_t, g_t = forward_backward(scene, "torch", weights, packed=False, absgrad=True)
    c_n, a_n, g_n = forward_backward(scene, "numba", weights, packed=False, absgrad=True)
    assert a_t.max() > 0.9998  # at the 1e-4 transmittance stop
    torch.testing.assert_close(c_n, c_t, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(a_n, a_t, atol=1e-10, rtol=1e-10)
    assert_grads_close(g_n, g_t, rtol=1e-8, keys=PARAMS + ("means2d", "absgrad"))


@pytest.mark.parametrize(("scale", "eps2d"), [(4.0, 0.3), (0.05, 0.01)], ids=["walks across tiles", "sharp conics"])
def test_numba_exp_by_walking_matches_torch_float64(scale, eps2d):
    """exp(−σ) by ratio products along rows and between rows (large Gaussians: walks of many
    rows and columns per tile), and per pixel where conic entries exceed the walk's bound (tiny
    Gaussians with little blur), both against the torch reference's exp per pixel."""
    from vision3d.render.composite_numba import _WALK_CONIC_MAX

    scene = make_scene(n=200, d=3, dtype=torch.float64, seed=7, width=64, height=48)
    scene["scales"] = scene["scales"] * scale
    radii, _, _, conics, _ = fully_fused_projection(scene["means"], scene["quats"], scene["scales"],
                                                    scene["viewmats"], scene["Ks"], 64, 48, eps2d=eps2d)  # fmt: skip
    sharp = (conics.abs().amax(-1) > _WALK_CONIC_MAX) & (radii > 0)
    assert bool(sharp.any()) == (scale < 1)  # the case exercises the path it names
    weights = torch.randn(1, 48, 64, 3, dtype=torch.float64)
    c_t, a_t, g_t = forward_backward(scene, "torch", weights, packed=False, absgrad=True, eps2d=eps2d)
    c_n, a_n, g_n = forward_backward(scene, "numba", weights, packed=False, absgrad=True, eps2d=eps2d)
    assert a_t.max() > 0.5
    torch.testing.assert_close(c_n, c_t, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(a_n, a_t, atol=1e-10, rtol=1e-10)
    assert_grads_close(g_n, g_t, rtol=1e-8, keys=PARAMS + ("means2d", "absgrad"))


def test_many_channels():
    """Extra channels (e.g. RoMaP's per-Gaussian labels) beyond 32."""
    scene = make_scene(n=100, d=40)
    weights = torch.randn(1, 32, 40, 40)
    c_t, _, g_t = forward_backward(scene, "torch", weights)
    c_n, _, g_n = forward_backward(scene, "numba", weights)
    torch.testing.assert_close(c_n, c_t, atol=1e-5, rtol=1e-5)
    assert_grads_close(g_n, g_t, rtol=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radix_argsort_is_a_stable_float_sort(dtype):
    from vision3d.render.tiles_numba import _radix_argsort, _sortable_bits

    rng = np.random.default_rng(0)
    values = rng.normal(size=5000).astype(dtype) * 10
    values[::7] = 1.5  # ties must keep index order
    values[::11] = -0.0
    values[::13] = 0.0
    values[3] = np.finfo(dtype).max
    values[4] = -np.finfo(dtype).max
    expected = np.argsort(values, kind="stable")
    got = _radix_argsort(_sortable_bits(values))
    # -0.0 and 0.0 compare equal for numpy but are distinct bit patterns: -0.0 sorts first here
    np.testing.assert_array_equal(values[got], values[expected])
    same = values[expected] != 0
    np.testing.assert_array_equal(got[same], expected[same])


def test_numba_path_runs_torch_single_threaded_and_restores_the_thread_count(monkeypatch):
    from vision3d.render import composite_numba, projection_numba
    from vision3d.render.cpu_threads import torch_single_threaded

    seen = []
    for module, name in ((composite_numba, "_composite_fwd"), (composite_numba, "_composite_bwd"),
                         (projection_numba, "_project_bwd")):  # fmt: skip
        kernel = getattr(module, name)

        def spy(*args, _kernel=kernel, _name=name):
            seen.append((_name, torch.get_num_threads()))
            return _kernel(*args)

        monkeypatch.setattr(module, name, spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        scene = make_scene(n=50, n_cams=1, width=32, height=24)
        forward_backward(scene, "numba", torch.ones(1, 24, 32, 3))
        assert torch.get_num_threads() == 2
        assert sorted(seen) == [("_composite_bwd", 1), ("_composite_fwd", 1), ("_project_bwd", 1)]
        with pytest.raises(RuntimeError), torch_single_threaded():
            assert torch.get_num_threads() == 1
            raise RuntimeError
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_ellipse_meets_rect_edge_cases():
    """Mean inside → meets; far away → not; non-positive-definite conic → kept; cut < 0 → dropped."""
    from vision3d.render.tiles import ellipse_meets_rect

    means = torch.tensor([[5.0, 5.0], [40.0, 5.0], [40.0, 5.0], [5.0, 5.0], [17.5, 5.0]])
    conics = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 2.0, 1.0], [1.0, 0.0, 1.0], [0.5, 0.0, 0.5]])
    cut = torch.tensor([4.0, 4.0, 4.0, -1.0, 1.0])
    box = [torch.full((5,), v) for v in (0.5, 15.5, 0.5, 15.5)]  # one 16-px tile's pixel centres
    # row 5: σ at the nearest edge point (15.5, 5) is ½·0.5·2² = 1.0 ≤ cut: meets exactly at the border
    assert ellipse_meets_rect(means, conics, cut, *box).tolist() == [True, False, True, False, True]
    cut[4] = 0.999
    assert not bool(ellipse_meets_rect(means, conics, cut, *box)[4])
