"""PatchMatch MVS: kernel vs torch reference, plane recovery, seeding, geometric filter, fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mvs_helpers import plane_views

from vision3d.geometry.se3 import relative_pose
from vision3d.mvs import (
    GeometricFilterConfig,
    GeometricPrior,
    MatchingCostConfig,
    PatchMatchConfig,
    Seed,
    fuse_points,
    geometric_consistency,
    patchmatch_view,
    plane_costs_torch,
    select_sources,
)
from vision3d.mvs.cost_numba import plane_costs_numba

CENTRES = [[0, 0, 0], [0.6, 0, 0], [-0.6, 0.1, 0], [0, 0.5, 0]]
SLANTED = [0.6, 0.25, -1.0]  # about 33° from the optical axis


def _scene(normal, size=(40, 52)):
    return plane_views(normal, [0, 0, 4], CENTRES, [0, 0, 4], size=size)


def _errors(depth, normal, true_depth, true_normal, margin=6):
    inner = torch.zeros_like(depth, dtype=torch.bool)
    inner[margin:-margin, margin:-margin] = True
    rel = ((depth - true_depth).abs() / true_depth)[inner]
    angle = torch.rad2deg(torch.acos((normal * true_normal).sum(-1).clamp(-1, 1)))[inner]
    return rel, angle


def _candidates(depth, normal, rows, cols, n_cand, gen):
    d = depth[rows, cols][:, None] * (1 + 0.1 * torch.randn(len(rows), n_cand, generator=gen, dtype=torch.float64))
    n = normal[rows, cols][:, None] + 0.3 * torch.randn(len(rows), n_cand, 3, generator=gen, dtype=torch.float64)
    d[:, 0], n[:, 0] = depth[rows, cols], normal[rows, cols]
    n[:, 1] = -n[:, 1]  # back-facing: worst cost
    d[:, 2] = -1.0  # behind the camera: worst cost
    return d, n / n.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("bilateral", [True, False])
def test_numba_cost_matches_torch_reference(bilateral):
    imgs, K, c2w, depth, normal = _scene(SLANTED, size=(24, 30))
    T = relative_pose(c2w[1:], c2w[:1].expand(3, 4, 4))  # noqa: N806
    gen = torch.Generator().manual_seed(1)
    rows, cols = torch.randint(0, 24, (150,), generator=gen), torch.randint(0, 30, (150,), generator=gen)
    d, n = _candidates(depth[0], normal[0], rows, cols, 6, gen)
    cfg = MatchingCostConfig(bilateral=bilateral, top_k=2)
    args = (imgs[0], imgs[1:], K[0], K[1:], T[:, :3, :3], T[:, :3, 3], rows, cols, d, n, cfg)
    ref, fast = plane_costs_torch(*args, chunk=64), plane_costs_numba(*args)
    torch.testing.assert_close(fast, ref, atol=1e-9, rtol=0)
    assert (ref[:, 1:3] == 2.0).all()  # back-facing and behind-camera hypotheses get the worst cost
    assert ref[:, 0].median() < 0.02  # the true plane matches, perturbed ones less well
    assert (ref[:, :1] < ref[:, 3:]).float().mean() > 0.9


@pytest.mark.parametrize("plane", [[0.0, 0.0, -1.0], SLANTED], ids=["fronto_parallel", "slanted"])
def test_patchmatch_recovers_plane(plane):
    imgs, K, c2w, depth, normal = _scene(plane)
    cfg = PatchMatchConfig(iterations=4)
    out = patchmatch_view(imgs, K, c2w, 0, [1, 2, 3], (2.0, 8.0), cfg, generator=torch.Generator().manual_seed(0))
    rel, angle = _errors(out.depth, out.normal, depth[0], normal[0])
    assert rel.median() < 0.003 and (rel < 0.01).float().mean() > 0.95
    assert angle.median() < 3.0 and (angle < 10.0).float().mean() > 0.95
    assert out.confidence.shape == depth[0].shape and out.confidence.median() > 0.9


def test_numba_and_torch_backends_agree_end_to_end():
    imgs, K, c2w, *_ = _scene(SLANTED, size=(16, 20))
    runs = [patchmatch_view(imgs, K, c2w, 0, [1, 2], (2.0, 8.0), PatchMatchConfig(iterations=1, backend=b),
                            generator=torch.Generator().manual_seed(3)) for b in ("numba", "torch")]
    same = (runs[0].depth - runs[1].depth).abs() < 1e-9
    assert same.float().mean() > 0.99  # identical candidates; only float ties may pick differently
    torch.testing.assert_close(runs[0].cost[same], runs[1].cost[same], atol=1e-9, rtol=0)


def test_seed_is_kept_where_trusted_and_spreads():
    imgs, K, c2w, depth, normal = _scene(SLANTED)
    mask = torch.zeros_like(depth[0], dtype=torch.bool)
    mask[:, :26] = True  # the left half is seeded with the truth
    seed = Seed(depth[0], normal[0], mask)
    as_seeded = patchmatch_view(imgs, K, c2w, 0, [1, 2, 3], (2.0, 8.0), PatchMatchConfig(iterations=0), seed=seed)
    assert torch.equal(as_seeded.depth[mask], depth[0][mask]) and not torch.allclose(as_seeded.depth, depth[0])
    cfg = PatchMatchConfig(iterations=1)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    seeded = patchmatch_view(imgs, K, c2w, 0, [1, 2, 3], (2.0, 8.0), cfg, seed=seed, generator=gen())
    random = patchmatch_view(imgs, K, c2w, 0, [1, 2, 3], (2.0, 8.0), cfg, generator=gen())
    right = (slice(6, -6), slice(26, -6))
    rel_seeded = ((seeded.depth - depth[0]).abs() / depth[0])[right]
    rel_random = ((random.depth - depth[0]).abs() / depth[0])[right]
    assert (rel_seeded < 0.01).float().mean() > 0.95  # propagation carried the seed into the unseeded half
    assert (rel_seeded < 0.01).float().mean() > (rel_random < 0.01).float().mean() + 0.05
    with pytest.raises(ValueError, match="seed of view 0"):
        patchmatch_view(imgs, K, c2w, 0, [1], (2.0, 8.0), seed=Seed(depth[0, :5], normal[0], mask))


def test_geometric_term_alone_recovers_depth_where_the_image_is_flat():
    imgs, K, c2w, depth, normal = _scene(SLANTED)
    flat = imgs.clone()
    flat[0] = 0.5  # no texture in the reference: every photometric cost is the worst, only the prior informs
    prior = GeometricPrior(depth[1:])
    cfg = PatchMatchConfig(iterations=3)
    out = patchmatch_view(flat, K, c2w, 0, [1, 2, 3], (2.0, 8.0), cfg, prior=prior,
                          generator=torch.Generator().manual_seed(0))
    rel, _ = _errors(out.depth, out.normal, depth[0], normal[0])
    # the term reads the sources' depth at the nearest pixel, so it pins depth to about a pixel of disparity
    # (9 px disparity here: ~5 %), not to the sub-pixel accuracy of the photometric cost
    assert rel.median() < 0.03 and (rel < 0.06).float().mean() > 0.9
    assert (out.cost == 2.0).all()  # the returned cost stays photometric
    blind = patchmatch_view(flat, K, c2w, 0, [1, 2, 3], (2.0, 8.0), cfg, generator=torch.Generator().manual_seed(0))
    assert (_errors(blind.depth, blind.normal, depth[0], normal[0])[0] < 0.06).float().mean() < 0.3


def test_geometric_filter_removes_injected_wrong_depth():
    _, K, c2w, depth, _ = _scene(SLANTED)
    wrong = depth.clone()
    wrong[0, 15:25, 20:30] *= 1.1
    sources = select_sources(c2w, 3)
    check = geometric_consistency(wrong, K, c2w, sources, GeometricFilterConfig(min_consistent=2))
    assert not check.mask[0, 15:25, 20:30].any()
    kept = check.mask[0, 6:-6, 6:-6].clone()
    kept[9:19, 14:24] = True
    assert kept.float().mean() > 0.95  # the correct rest of view 0 is kept
    assert check.count[1:, 10:-10, 10:-10].min() >= 2


def test_fusion_of_a_plane_lies_on_the_plane():
    _, K, c2w, depth, normal = _scene(SLANTED)
    rgb = torch.rand(*depth.shape, 3, generator=torch.Generator().manual_seed(0))
    check = geometric_consistency(depth, K, c2w, select_sources(c2w, 3))
    cloud = fuse_points(check.points, normal, rgb, c2w, check.mask)
    n = np.array(SLANTED) / np.linalg.norm(SLANTED)
    assert len(cloud.points) > 0.6 * depth.numel()
    assert np.abs((cloud.points - [0, 0, 4]) @ n).max() < 1e-6
    assert np.abs(np.abs(cloud.normals @ n) - 1).max() < 1e-9
    np.testing.assert_allclose(cloud.colors, rgb[check.mask].numpy())
    thinned = fuse_points(check.points, normal, rgb, c2w, check.mask, voxel_size=0.2)
    assert 0 < len(thinned.points) < len(cloud.points) / 4
    assert np.abs((thinned.points - [0, 0, 4]) @ n).max() < 1e-6


def test_select_sources_prefers_close_viewing_directions():
    _, _, c2w, *_ = _scene(SLANTED, size=(8, 8))
    sources = select_sources(c2w, 2)
    assert all(len(s) == 2 and v not in s for v, s in enumerate(sources))
    far = c2w.clone()
    far[3, :3, :3] = torch.tensor([[1.0, 0, 0], [0, math.cos(2.0), -math.sin(2.0)], [0, math.sin(2.0), math.cos(2.0)]],
                                  dtype=far.dtype)  # looks 115° away
    assert all(3 not in s for s in select_sources(far, 3)[:3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the torch cost path is checked on CPU only")
def test_torch_cost_on_cuda_matches_numba():
    imgs, K, c2w, depth, normal = _scene(SLANTED, size=(24, 30))
    T = relative_pose(c2w[1:], c2w[:1].expand(3, 4, 4))  # noqa: N806
    gen = torch.Generator().manual_seed(1)
    rows, cols = torch.randint(0, 24, (150,), generator=gen), torch.randint(0, 30, (150,), generator=gen)
    d, n = _candidates(depth[0], normal[0], rows, cols, 6, gen)
    args = [imgs[0], imgs[1:], K[0], K[1:], T[:, :3, :3], T[:, :3, 3], rows, cols, d, n]
    cuda = plane_costs_torch(*[a.cuda() for a in args], MatchingCostConfig()).cpu()
    torch.testing.assert_close(cuda, plane_costs_numba(*args, MatchingCostConfig()), atol=1e-9, rtol=0)
