"""CPU Gaussian rasterizer: gsplat 1.4's contract, against brute force, finite differences and gsplat's maths."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vision3d.render import rasterize_gaussians
from vision3d.render.projection import fully_fused_projection
from vision3d.render.reference import rasterize_dense_reference

BACKENDS = ["torch"] + (["numba"] if importlib.util.find_spec("vision3d.render.composite_numba") else [])


def make_scene(n=60, n_cams=1, d=3, width=40, height=32, dtype=torch.float32, opacity=(0.05, 0.95), seed=0):
    """Random Gaussians in front of simple pinhole cameras looking down +z."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g, dtype=dtype) * torch.tensor([2.0, 1.6, 2.0], dtype=dtype)
    means = means + torch.tensor([-1.0, -0.8, 2.0], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.12 + 0.02
    lo, hi = opacity
    opacities = torch.rand(n, generator=g, dtype=dtype) * (hi - lo) + lo
    colors = torch.rand(n, d, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype).repeat(n_cams, 1, 1)
    for c in range(n_cams):  # small sideways shifts between cameras
        viewmats[c, 0, 3] = 0.15 * c
    Ks = torch.tensor([[40.0, 0, width / 2], [0, 40.0, height / 2], [0, 0, 1]], dtype=dtype).repeat(n_cams, 1, 1)
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                viewmats=viewmats, Ks=Ks, width=width, height=height)  # fmt: skip


def dense_render(scene, sh_degree=None, eps2d=0.3):
    """Brute-force image of a scene (RGB / N-D colours, no background)."""
    C, N = scene["viewmats"].shape[0], scene["means"].shape[0]
    radii, m2d, depths, conics, _ = fully_fused_projection(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"],
        scene["width"], scene["height"], eps2d=eps2d,
    )  # fmt: skip
    cols = scene["colors"]
    cols = cols[None].expand(C, -1, -1) if cols.dim() == 2 else cols
    cam = torch.arange(C).repeat_interleave(N)
    return rasterize_dense_reference(
        m2d.reshape(-1, 2), conics.reshape(-1, 3), cols.reshape(C * N, -1),
        scene["opacities"][None].expand(C, -1).reshape(-1), radii.reshape(-1), depths.reshape(-1), cam, C,
        scene["width"], scene["height"],
    )  # fmt: skip


def subset(scene, idx):
    """The scene restricted to some Gaussians (cameras unchanged)."""
    keys = ("means", "quats", "scales", "opacities", "colors")
    return {k: (v[idx] if k in keys else v) for k, v in scene.items()}


def render(scene, **kw):
    s = dict(scene)
    return rasterize_gaussians(
        s.pop("means"), s.pop("quats"), s.pop("scales"), s.pop("opacities"), s.pop("colors"),
        s.pop("viewmats"), s.pop("Ks"), s.pop("width"), s.pop("height"), **kw,
    )  # fmt: skip


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("packed", [False, True])
def test_forward_matches_dense_bruteforce(backend, packed):
    scene = make_scene(n=80, n_cams=2, d=5)  # 5 channels: arbitrary features, not only RGB
    colors, alphas, info = render(scene, backend=backend, packed=packed)
    ref_c, ref_a = dense_render(scene)
    assert colors.shape == (2, 32, 40, 5) and alphas.shape == (2, 32, 40, 1)
    assert alphas.max() > 0.5  # the scene is not trivially empty
    torch.testing.assert_close(colors, ref_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alphas, ref_a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_rule_on_opaque_stack(backend):
    """Many opaque Gaussians on top of each other: transmittance stops at 1e-4, exclusively."""
    scene = make_scene(n=50, opacity=(0.95, 0.999))
    scene["means"][:, :2] = scene["means"][:, :2] * 0.05
    scene["scales"] = scene["scales"] * 4
    colors, alphas, _ = render(scene, backend=backend, packed=False)
    ref_c, ref_a = dense_render(scene)
    assert alphas.max() > 0.999
    torch.testing.assert_close(colors, ref_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alphas, ref_a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_render_modes_and_background(backend):
    scene = make_scene(n=40, n_cams=2)
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]])
    rgb, alpha, _ = render(scene, backend=backend)
    rgb_bg, alpha_bg, _ = render(scene, backend=backend, backgrounds=bg)
    torch.testing.assert_close(rgb_bg, rgb + (1 - alpha) * bg[:, None, None, :])
    torch.testing.assert_close(alpha_bg, alpha)
    d, _, _ = render(scene, backend=backend, render_mode="D")
    ed, _, _ = render(scene, backend=backend, render_mode="ED", backgrounds=bg)
    rgbd, _, _ = render(scene, backend=backend, render_mode="RGB+D", backgrounds=bg)
    rgbed, _, _ = render(scene, backend=backend, render_mode="RGB+ED")
    assert d.shape == ed.shape == (2, 32, 40, 1) and rgbd.shape == rgbed.shape == (2, 32, 40, 4)
    torch.testing.assert_close(ed, d / alpha.clamp(min=1e-10))
    torch.testing.assert_close(rgbd[..., :3], rgb_bg)
    torch.testing.assert_close(rgbd[..., 3:], d)  # the depth channel gets a zero background
    torch.testing.assert_close(rgbed[..., 3:], ed)
    seen = alpha[..., 0] > 0.5
    z = scene["means"][:, 2]
    assert ed[..., 0][seen].min() >= z.min() - 0.5 and ed[..., 0][seen].max() <= z.max() + 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_sh_colors(backend):
    from gsplat.cuda._torch_impl import _spherical_harmonics  # pure torch oracle

    scene = make_scene(n=40)
    sh = torch.randn(40, 16, 3) * 0.3
    scene["colors"] = sh
    for degree in range(4):
        out, _, _ = render(scene, sh_degree=degree, backend=backend)
        campos = torch.linalg.inv(scene["viewmats"])[0, :3, 3]
        rgb = torch.clamp_min(_spherical_harmonics(degree, scene["means"] - campos, sh) + 0.5, 0)
        ref, _ = dense_render(dict(scene, colors=rgb))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_projection_matches_gsplat_torch_maths():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    scene = make_scene(n=200, n_cams=3, dtype=torch.float64)
    scene["means"][:20, 2] = -1.0  # behind the camera
    scene["means"][20:40, 0] = 50.0  # far outside the image
    covars, _ = _quat_scale_to_covar_preci(scene["quats"], scene["scales"], compute_preci=False)
    ref = _fully_fused_projection(scene["means"], covars, scene["viewmats"], scene["Ks"], 40, 32,
                                  calc_compensations=True)  # fmt: skip
    ours = fully_fused_projection(scene["means"], scene["quats"], scene["scales"], scene["viewmats"],
                                  scene["Ks"], 40, 32, calc_compensations=True)  # fmt: skip
    assert torch.equal(ours[0], ref[0])
    vis = ref[0] > 0
    assert 0 < vis.sum() < vis.numel()
    for a, b in zip(ours[1:], ref[1:], strict=True):
        torch.testing.assert_close(a[vis], b[vis])


# --------------------------------------------------------------------------- info contract


@pytest.mark.parametrize("backend", BACKENDS)
def test_info_contract_unpacked(backend):
    scene = make_scene(n=30, n_cams=2)
    for k in ("means", "quats", "scales", "opacities", "colors"):
        scene[k].requires_grad_(True)
    colors, _, info = render(scene, backend=backend, packed=False, absgrad=True)
    m2d = info["means2d"]
    assert m2d.shape == (2, 30, 2) and not m2d.is_leaf and m2d.requires_grad
    assert info["radii"].shape == (2, 30) and info["radii"].dtype == torch.int32
    assert info["gaussian_ids"] is None and info["camera_ids"] is None
    assert (info["width"], info["height"], info["n_cameras"], info["tile_size"]) == (40, 32, 2, 16)
    assert info["isect_offsets"].shape == (2, 2, 3)
    assert info["depths"].shape == (2, 30) and info["conics"].shape == (2, 30, 3)
    m2d.retain_grad()
    colors.sum().backward()
    assert m2d.grad is not None and m2d.grad.shape == (2, 30, 2)
    assert m2d.grad.abs().sum() > 0
    assert m2d.absgrad.shape == (2, 30, 2)
    # per-pixel |.| summed is at least |sum|, and culled Gaussians get nothing
    assert torch.all(m2d.absgrad >= m2d.grad.abs() - 1e-5)
    assert torch.all(m2d.absgrad[info["radii"] == 0] == 0)
    for k in ("means", "quats", "scales", "opacities", "colors"):
        assert scene[k].grad is not None and torch.isfinite(scene[k].grad).all(), k


@pytest.mark.parametrize("backend", BACKENDS)
def test_info_contract_packed(backend):
    scene = make_scene(n=30, n_cams=2)
    scene["means"][:5, 2] = -2.0
    _, _, info_u = render(scene, backend=backend, packed=False)
    colors, _, info = render(scene, backend=backend, packed=True)
    sel = info_u["radii"] > 0
    nnz = int(sel.sum())
    assert info["means2d"].shape == (nnz, 2) and info["radii"].shape == (nnz,)
    assert torch.equal(info["gaussian_ids"], torch.nonzero(sel)[:, 1])
    assert torch.equal(info["camera_ids"], torch.nonzero(sel)[:, 0])
    torch.testing.assert_close(info["means2d"], info_u["means2d"][sel])


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_scene_returns_background(backend):
    scene = make_scene(n=0, n_cams=2)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    colors, alphas, info = render(scene, backend=backend, backgrounds=bg)
    assert torch.all(alphas == 0)
    torch.testing.assert_close(colors, bg[:, None, None, :].expand(2, 32, 40, 3))
    assert info["radii"].shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_behind_camera_and_outside_culled(backend):
    scene = make_scene(n=20)
    scene["means"][:, 2] = -scene["means"][:, 2]  # all behind the camera
    for k in ("means", "scales", "opacities"):
        scene[k].requires_grad_(True)
    bg = torch.tensor([[0.3, 0.3, 0.3]])
    colors, alphas, info = render(scene, backend=backend, backgrounds=bg, packed=False)
    assert torch.all(info["radii"] == 0) and torch.all(alphas == 0)
    torch.testing.assert_close(colors, bg[:, None, None, :].expand(1, 32, 40, 3))
    colors.sum().backward()
    for k in ("means", "scales", "opacities"):
        assert torch.isfinite(scene[k].grad).all() and torch.all(scene[k].grad == 0), k
    # a mix: the culled ones do not change the image of the rest
    mixed = make_scene(n=40)
    mixed["means"][:10, 2] = -1.0
    mixed["means"][10:15, 2] = 0.0  # exactly on the camera plane
    ref = subset(mixed, slice(15, None))
    a, _, _ = render(mixed, backend=backend)
    b, _, _ = render(ref, backend=backend)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [0.0, 1e-8, 1e3, 1e5])
def test_degenerate_scales_stay_finite(backend, scale):
    scene = make_scene(n=20)
    scene["scales"] = scene["scales"].clone()
    scene["scales"][:5] = scale
    scene["scales"][5:7, 0] = scale  # one degenerate axis
    for k in ("means", "quats", "scales", "opacities", "colors"):
        scene[k].requires_grad_(True)
    colors, alphas, info = render(scene, backend=backend, render_mode="RGB+ED")
    assert torch.isfinite(colors).all() and torch.isfinite(alphas).all()
    (colors.sum() + alphas.sum()).backward()
    for k in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.isfinite(scene[k].grad).all(), k


@pytest.mark.parametrize("name", ["means", "quats", "scales", "opacities", "colors", "viewmats", "Ks"])
def test_nan_input_raises_naming_tensor(name):
    scene = make_scene(n=10)
    scene[name] = scene[name].clone()
    scene[name].view(-1)[3] = float("nan")
    with pytest.raises(ValueError, match=rf"^{name} contains NaN"):
        render(scene)


@pytest.mark.parametrize(
    ("name", "bad"),
    [("means", torch.zeros(10, 2)), ("quats", torch.zeros(10, 3)), ("scales", torch.zeros(9, 3)),
     ("opacities", torch.zeros(10, 1)), ("colors", torch.zeros(11, 3)), ("viewmats", torch.zeros(1, 3, 4)),
     ("Ks", torch.zeros(2, 3, 3))],
)  # fmt: skip
def test_wrong_shapes_raise(name, bad):
    scene = make_scene(n=10)
    scene[name] = bad
    with pytest.raises(ValueError, match=name):
        render(scene)


def test_bad_arguments_raise():
    scene = make_scene(n=10)
    with pytest.raises(ValueError, match="render_mode"):
        render(scene, render_mode="RGBD")
    with pytest.raises(ValueError, match="sh_degree"):
        render(dict(scene, colors=torch.zeros(10, 4, 3)), sh_degree=2)
    with pytest.raises(ValueError, match="backgrounds"):
        render(scene, backgrounds=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="width and height"):
        render(dict(scene, width=0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_covars_percamera_colors_and_radius_clip(backend):
    from vision3d.render.projection import quat_scale_to_covar

    scene = make_scene(n=50, n_cams=2)
    ref, ref_a, ref_info = render(scene, backend=backend)
    s = dict(scene)
    covars = quat_scale_to_covar(s["quats"], s["scales"])
    out, a, _ = rasterize_gaussians(s["means"], None, None, s["opacities"], s["colors"], s["viewmats"], s["Ks"],
                                    40, 32, covars=covars, backend=backend)  # fmt: skip
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    per_cam = render(dict(scene, colors=scene["colors"][None].expand(2, -1, -1).clone()), backend=backend)[0]
    torch.testing.assert_close(per_cam, ref)
    r = ref_info["radii"][ref_info["radii"] > 0]
    clip = float(r.float().median())
    _, _, info = render(scene, backend=backend, radius_clip=clip)
    assert torch.all(info["radii"][info["radii"] > 0] > clip) and (info["radii"] > 0).sum() < (ref_info["radii"] > 0).sum()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gsplat_default_strategy_runs_on_our_info(backend):
    """gsplat's DefaultStrategy reads means2d.absgrad / radii / width / height / n_cameras from our info."""
    from gsplat.strategy import DefaultStrategy

    scene = make_scene(n=200)
    params = torch.nn.ParameterDict({
        "means": scene["means"], "quats": scene["quats"], "scales": torch.log(scene["scales"]),
        "opacities": torch.logit(scene["opacities"]), "colors": scene["colors"],
    })  # fmt: skip
    opts = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    strategy = DefaultStrategy(refine_start_iter=1, refine_every=2, grow_grad2d=1e-8, absgrad=True)
    strategy.check_sanity(params, opts)
    state = strategy.initialize_state()
    for step in range(3):
        colors, _, info = rasterize_gaussians(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
            params["colors"], scene["viewmats"], scene["Ks"], 40, 32, packed=False, absgrad=True, backend=backend,
        )  # fmt: skip
        strategy.step_pre_backward(params, opts, state, step, info)
        colors.mean().backward()
        strategy.step_post_backward(params, opts, state, step, info, packed=False)
        for opt in opts.values():
            opt.step()
            opt.zero_grad()
    assert params["means"].shape[0] > 200  # grew from the absgrad signal
