"""3D-GALP part labels (vision3d.methods.romap): rendering, losses, softness, anchors, 3D mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vision3d.methods.romap.galp import (
    GalpConfig,
    GalpLoss,
    camera_centres,
    init_label_coeffs,
    init_labels_from_votes,
    knn_consistency_loss,
    knn_neighbours,
    label_loss,
    label_softness,
    mask_votes,
    mean_labels,
    part_masks_to_onehot,
    render_labels,
    select_anchors,
)
from vision3d.methods.romap.selection import mask_gradients, part_membership, select_part, zero_optimizer_rows
from vision3d.render.rasterize import rasterize_gaussians
from vision3d.render.sh import _C0 as SH_C0

W, H = 32, 24


def look_at(centre: torch.Tensor, target=(0.0, 0.0, 0.0)) -> torch.Tensor:  # -> world-to-camera [4, 4], OpenCV
    f = F.normalize(torch.tensor(target) - centre, dim=0)
    x = F.normalize(torch.linalg.cross(f, torch.tensor([0.0, 1.0, 0.0])), dim=0)
    y = torch.linalg.cross(f, x)
    R = torch.stack([x, y, f])  # noqa: N806
    T = torch.eye(4)  # noqa: N806
    T[:3, :3], T[:3, 3] = R, -R @ centre
    return T


def two_part_scene(n_per=60, n_cams=4, seed=0):
    """Two blobs of Gaussians (part 1 at x<0, part 2 at x>0) seen from the front (-z side)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-0.7, 0.0, 0.0], [0.7, 0.0, 0.0]])
    means = torch.cat([c + 0.25 * torch.randn(n_per, 3, generator=g) for c in centres])
    part = torch.cat([torch.full((n_per,), 1), torch.full((n_per,), 2)])
    n = means.shape[0]
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4).contiguous()
    scales = torch.full((n, 3), 0.18)
    opacities = torch.full((n,), 0.9)
    angles = torch.linspace(-0.35, 0.35, n_cams)
    viewmats = torch.stack([look_at(torch.stack([4 * a.sin(), 0.3 * a, -4 * a.cos()])) for a in angles])
    Ks = torch.tensor([[30.0, 0.0, W / 2], [0.0, 30.0, H / 2], [0.0, 0.0, 1.0]]).expand(n_cams, 3, 3)  # noqa: N806
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, viewmats=viewmats, Ks=Ks), part, centres


def true_coeffs(part, n_parts=2, sh_degree=3):
    c = init_label_coeffs(part.shape[0], n_parts, sh_degree)
    c[torch.arange(part.shape[0]), 0, part - 1] = 1.0 / SH_C0  # label exactly one-hot in every direction
    return c


def render(scene, coeffs, sh_degree=3):
    return render_labels(scene["means"], scene["quats"], scene["scales"], scene["opacities"], coeffs,
                         scene["viewmats"], scene["Ks"], W, H, sh_degree=sh_degree)  # fmt: skip


def project(scene, points):  # -> [C, M, 2] pixel coordinates
    cam = (scene["viewmats"][:, None, :3, :3] @ points[None, :, :, None])[..., 0] + scene["viewmats"][:, None, :3, 3]
    uv = (scene["Ks"][:, None] @ cam[..., None])[..., 0]
    return uv[..., :2] / uv[..., 2:]


def gt_part_ids(scene, part):
    """Per-pixel part id of the perfect labelling: argmax of its render where it is opaque, else 0."""
    with torch.no_grad():
        lab = render(scene, true_coeffs(part))
    return torch.where(lab.sum(-1) > 0.5, lab.argmax(-1) + 1, 0)


def test_labels_render_to_their_part_in_each_image_region():
    scene, part, centres = two_part_scene()
    lab = render(scene, true_coeffs(part))
    assert lab.shape == (4, H, W, 2)
    uv = project(scene, centres)  # [C, 2, 2]
    for c in range(4):
        for p in range(2):
            u, v = uv[c, p].round().long().tolist()
            assert 0 <= u < W and 0 <= v < H
            assert lab[c, v, u, p] > 0.8 and lab[c, v, u, 1 - p] < 0.05, (c, p, lab[c, v, u])
    corner = lab[:, 0, 0]  # background stays 0
    assert corner.abs().max() < 1e-3


def test_label_loss_vanishes_for_perfect_labels_and_not_otherwise():
    ids = torch.randint(0, 3, (2, 5, 6))
    masks = part_masks_to_onehot(ids, 2)
    assert masks[ids == 0].abs().sum() == 0 and torch.all(masks[ids == 2][:, 1] == 1)
    assert label_loss(masks, masks) == 0
    assert label_loss(masks.flip(-1), masks) > 0
    # through the rasterizer: the true labelling beats the swapped one by far (not 0: soft blob edges)
    scene, part, _ = two_part_scene()
    masks = part_masks_to_onehot(gt_part_ids(scene, part), 2)
    good = label_loss(render(scene, true_coeffs(part)), masks)
    bad = label_loss(render(scene, true_coeffs(3 - part)), masks)
    assert bad > 0 and good < 0.2 * bad, (good, bad)


def test_bad_part_ids_raise():
    for bad in (torch.tensor([[-1]]), torch.tensor([[3]]), torch.tensor([[0.5]])):
        try:
            part_masks_to_onehot(bad, 2)
        except ValueError:
            continue
        raise AssertionError(f"no error for {bad}")


def test_optimisation_on_noisy_masks_recovers_parts():
    scene, part, _ = two_part_scene()
    ids = gt_part_ids(scene, part)
    g = torch.Generator().manual_seed(1)
    flip = torch.rand(ids.shape, generator=g) < 0.25  # view-inconsistent noise: 25% of pixels relabelled
    noisy = torch.where(flip, torch.randint(0, 3, ids.shape, generator=g), ids)
    masks = part_masks_to_onehot(noisy, 2)
    coeffs = init_label_coeffs(part.shape[0], 2, 3).requires_grad_(True)
    opt = torch.optim.Adam([coeffs], lr=0.05)
    loss_fn = GalpLoss(GalpConfig(knn_k=8, knn_start_step=10, n_anchors=40, refresh_every=10))
    centres = camera_centres(scene["viewmats"])

    def part_error():
        return (mean_labels(coeffs.detach(), scene["means"], centres, 3).argmax(-1) + 1 != part).float().mean().item()

    err0 = part_error()
    for step in range(40):
        losses = loss_fn(step, render(scene, coeffs), masks, coeffs, scene["means"], centres)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert "galp_knn" in losses and torch.isfinite(losses["galp_knn"])
    err = part_error()
    assert err0 >= 0.5 and err < 0.05, (err0, err)
    sel = select_part(coeffs, scene["means"], centres, 1, threshold=0.7)
    assert sel.sum() > 0.6 * (part == 1).sum() and torch.all(part[sel] == 1), sel


def view_renderer(scene):
    """``render_view(v, feats [N, D]) -> [H, W, D]`` of view v of the scene."""

    def render_view(v, feats):
        img, _, _ = rasterize_gaussians(scene["means"], scene["quats"], scene["scales"], scene["opacities"], feats,
                                        scene["viewmats"][v : v + 1], scene["Ks"][v : v + 1], W, H)  # fmt: skip
        return img[0]

    return render_view


def test_mask_votes_are_blend_weights_and_recover_parts_from_noisy_masks():
    scene, part, _ = two_part_scene()
    render_view = view_renderer(scene)
    # one Gaussian: its votes for an all-part-1 mask are the image's total alpha, split by mask id otherwise
    one = {k: v if k in ("viewmats", "Ks") else v[:1] for k, v in scene.items()}
    _, alpha, _ = rasterize_gaussians(one["means"], one["quats"], one["scales"], one["opacities"], torch.ones(1, 1),
                                      one["viewmats"][:1], one["Ks"][:1], W, H)  # fmt: skip
    halves = torch.zeros(H, W, dtype=torch.long)
    halves[:, W // 2 :] = 2
    votes = mask_votes(view_renderer(one), [torch.ones(H, W, dtype=torch.long), halves], 1, 2)
    assert torch.allclose(votes[0, 1], alpha.sum(), rtol=1e-4), (votes, alpha.sum())
    assert votes[0, 0] == 0
    # two parts, 25 % of pixels relabelled per view: the majority of the votes is the true part
    ids = gt_part_ids(scene, part)
    g = torch.Generator().manual_seed(1)
    flip = torch.rand(ids.shape, generator=g) < 0.25
    noisy = torch.where(flip, torch.randint(0, 3, ids.shape, generator=g), ids)
    votes = mask_votes(render_view, list(noisy), part.shape[0], 2)
    coeffs = init_labels_from_votes(votes, 3, soft=False)
    centres = camera_centres(scene["viewmats"])
    labels = mean_labels(coeffs, scene["means"], centres, 3)
    seen = votes.sum(-1) > 0
    assert seen.float().mean() > 0.9
    assert (labels[seen].argmax(-1) + 1 == part[seen]).float().mean() > 0.95
    # one-hot (or background: all zero) in every direction
    assert torch.allclose(labels, labels.round(), atol=1e-5) and torch.all(labels.round().sum(-1) <= 1)
    soft = mean_labels(init_labels_from_votes(votes, 3, soft=True), scene["means"], centres, 3)
    assert torch.all(soft.sum(-1) <= 1 + 1e-5) and torch.all(soft >= -1e-6)


def test_part_membership_keeps_labels_that_overshoot_one():
    labels = torch.tensor([[1.6, 0.1], [0.4, 0.0], [0.6, 0.7], [1.0, 0.0], [0.0, 0.0]])
    assert part_membership(labels, 1).tolist() == [True, False, False, True, False]
    assert part_membership(labels, 2).tolist() == [False, False, True, False, False]
    coeffs = init_label_coeffs(5, 2, 3)
    coeffs[:, 0] = labels / SH_C0
    views = torch.tensor([[0.0, 0.0, -4.0], [3.0, 1.0, -3.0]])
    assert select_part(coeffs, torch.zeros(5, 3), views, 1).tolist() == [True, False, False, True, False]
    with pytest.raises(ValueError, match="part_id"):
        part_membership(labels, 3)


def test_softness_high_for_view_dependent_label_low_for_constant():
    n = 10
    means = torch.randn(n, 3) * 0.1
    coeffs = init_label_coeffs(n, 3, 3)
    coeffs[:, 0, 0] = 1.0 / SH_C0  # all: part 1 on average
    coeffs[:5, 1:4, 1] = 1.5  # first five: part 2's label swings with the view direction
    views = torch.randn(16, 3)
    views = 4 * F.normalize(views, dim=-1)
    s = label_softness(coeffs, means, views, 3)
    assert s.min() >= 0 and s.max() <= 1
    assert s[:5].min() > 0.5 and s[5:].max() < 1e-6, s
    anchors = select_anchors(s, 4)
    assert set(anchors[:2].tolist()) <= set(range(5)) and set(anchors[2:].tolist()) <= set(range(5, 10))


def test_knn_neighbours_match_brute_force_and_loss_vanishes_for_uniform_labels():
    g = torch.Generator().manual_seed(2)
    means = torch.rand(200, 3, generator=g)
    anchors = torch.tensor([0, 17, 150])
    nb = knn_neighbours(means, anchors, k=5)
    d = torch.cdist(means[anchors].double(), means.double())
    d[torch.arange(3), anchors] = float("inf")
    assert torch.equal(nb.sort(-1).values, d.topk(5, largest=False).indices.sort(-1).values)
    views = torch.tensor([[0.0, 0.0, -4.0], [3.0, 1.0, -3.0]])
    uniform = torch.randn(1, 16, 2).expand(200, -1, -1)  # the same view-dependent label everywhere
    assert knn_consistency_loss(uniform, torch.zeros_like(means), views, anchors, nb, 3) == 0
    assert knn_consistency_loss(uniform, means, views, anchors, nb, 0) == 0
    assert knn_consistency_loss(torch.randn(200, 16, 2), means, views, anchors, nb, 3) > 0


def test_gradient_mask_keeps_unselected_gaussians_fixed():
    scene, part, _ = two_part_scene(n_per=20, n_cams=2)
    coeffs = true_coeffs(part)
    selected = select_part(coeffs, scene["means"], camera_centres(scene["viewmats"]), 1)
    assert torch.equal(selected, part == 1)
    means = scene["means"].clone().requires_grad_(True)
    colours = torch.rand(means.shape[0], 3).requires_grad_(True)
    opt = torch.optim.Adam([means, colours], lr=0.05)

    def step():
        img, _, _ = rasterize_gaussians(means, scene["quats"], scene["scales"], scene["opacities"], colours,
                                        scene["viewmats"], scene["Ks"], W, H)  # fmt: skip
        opt.zero_grad()
        (img - 0.3).square().mean().backward()
        opt.step()

    step()  # unmasked: Adam moments now non-zero everywhere
    zero_optimizer_rows(opt, [means, colours], selected)
    handles = mask_gradients([means, colours], selected)
    before = means.detach().clone(), colours.detach().clone()
    step()
    for now, was in zip((means, colours), before, strict=True):
        assert torch.equal(now[~selected], was[~selected])
        assert (now[selected] - was[selected]).abs().max() > 0
    for h in handles:
        h.remove()


def test_knn_neighbours_on_a_subsample_exclude_the_anchor():
    means = torch.rand(300, 3, generator=torch.Generator().manual_seed(3))
    anchors = torch.arange(0, 300, 30)
    nb = knn_neighbours(means, anchors, k=6, max_points=100, generator=torch.Generator().manual_seed(0))
    assert nb.shape == (10, 6) and not torch.any(nb == anchors[:, None])
    assert torch.all((means[nb] - means[anchors][:, None]).norm(dim=-1) < 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (label maps through gsplat)")
def test_label_maps_on_cuda_match_cpu():
    scene, part, _ = two_part_scene()
    coeffs = true_coeffs(part)
    cpu = render(scene, coeffs)
    cuda = render({k: v.cuda() for k, v in scene.items()}, coeffs.cuda())
    assert (cuda.cpu() - cpu).abs().max() < 1e-3
