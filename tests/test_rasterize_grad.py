"""Gradients of the CPU rasterizer: finite differences (float64) and the brute-force reference."""

from __future__ import annotations

import pytest
import torch
from test_rasterize import BACKENDS, dense_render, make_scene, render

PARAMS = ("means", "quats", "scales", "opacities", "colors")


def tiny_scene(dtype=torch.float64, n=6):
    # low opacity: no Gaussian sits on the 0.999 clamp or the 1e-4 stop, where the image is not smooth
    scene = make_scene(n=n, width=20, height=18, dtype=dtype, opacity=(0.2, 0.7), seed=3)
    scene["scales"] = scene["scales"] * 2.0
    return scene


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["RGB", "RGB+ED"])
def test_gradcheck_float64(backend, mode):
    scene = tiny_scene()
    bg = torch.tensor([[0.3, 0.6, 0.1]], dtype=torch.float64)
    weights = torch.randn(1, 18, 20, 4 if mode == "RGB+ED" else 3, dtype=torch.float64)

    def f(*params):
        s = dict(scene, **dict(zip(PARAMS, params, strict=True)))
        colors, alphas, _ = render(s, backend=backend, render_mode=mode, backgrounds=bg)
        return (colors * weights).sum() + (alphas * weights[..., :1]).sum()

    inputs = tuple(scene[k].clone().requires_grad_(True) for k in PARAMS)
    # the torch path is slow per evaluation: check random directions there (fast_mode)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=backend == "torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_bruteforce(backend):
    scene = make_scene(n=40, n_cams=2, d=4)
    weights = torch.randn(2, 32, 40, 4)

    def grads(fn):
        params = {k: scene[k].clone().requires_grad_(True) for k in PARAMS}
        colors, alphas = fn(dict(scene, **params))
        ((colors * weights).sum() + alphas.sum()).backward()
        return {k: v.grad for k, v in params.items()}

    ours = grads(lambda s: render(s, backend=backend)[:2])
    ref = grads(dense_render)
    for k in PARAMS:
        torch.testing.assert_close(ours[k], ref[k], atol=1e-4, rtol=1e-3, msg=k)
