"""romap's guidance: masked SDS backends on tiny random-weight diffusers models, annealing, SLaMP, missing weights."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers", reason="romap's guidance needs diffusers (a vision3d dependency)")

from vision3d.methods.romap.guidance import Guidance, GuidanceConfig, t_range  # noqa: E402
from vision3d.methods.romap.slamp import SlampConfig, slamp_image, slamp_latents  # noqa: E402


def square_mask(size=24, lo=6, hi=18):
    mask = torch.zeros(1, size, size, 1)
    mask[:, lo:hi, lo:hi] = 1.0
    return mask


@pytest.mark.parametrize("backend", ["tiny-sd", "tiny-sd3"])
def test_masked_sds_is_finite_and_reaches_only_pixels_inside_the_mask(backend):
    guidance = Guidance(GuidanceConfig(backend=backend, resolution=32, t_min=0.3, t_max=0.9))
    mask = square_mask()
    for step in (0, 400):
        guidance.update_step(step)
        rgb = torch.rand(1, 24, 24, 3, requires_grad=True)
        loss, t = guidance(rgb, "a golden bunny", None, mask)
        loss.backward()
        grad = rgb.grad.abs().sum(-1)[0]
        assert torch.isfinite(loss) and loss > 0 and torch.isfinite(rgb.grad).all()
        assert 0.3 <= float(t) <= t_range(guidance.config, step)[1]
        assert grad[mask[0, ..., 0] == 0].max() == 0, "gradient leaked outside the mask"
        assert (grad[mask[0, ..., 0] == 1] > 0).float().mean() > 0.9


def test_timestep_range_anneals_linearly_then_holds():
    config = GuidanceConfig(t_min=0.02, t_max=0.98, t_max_end=0.5, anneal_steps=100)
    assert t_range(config, 0) == (0.02, 0.98)
    assert t_range(config, 50)[1] == pytest.approx(0.74)
    assert t_range(config, 100)[1] == pytest.approx(0.5) and t_range(config, 10_000)[1] == pytest.approx(0.5)


@pytest.mark.parametrize("backend, repo", [("sd", "stable-diffusion-v1-5"), ("sd3", "stable-diffusion-3-medium")])
def test_missing_weights_name_the_model_and_the_flag(tmp_path, backend, repo):
    with pytest.raises(FileNotFoundError, match=f"{repo}.*model_index.json not found.*--pipeline.model.guidance.model-path"):
        Guidance(GuidanceConfig(backend=backend, model_path=tmp_path))
    with pytest.raises(FileNotFoundError, match="no --pipeline.model.guidance.model-path given"):
        Guidance(GuidanceConfig(backend=backend))


def test_slamp_keeps_the_source_latents_outside_the_mask_and_edits_inside():
    guidance = Guidance(GuidanceConfig(backend="tiny-sd3", resolution=32))
    image, mask = torch.rand(1, 24, 24, 3), square_mask()
    config = SlampConfig(steps=6, t_s=2)
    z, z0 = slamp_latents(guidance, image, "gold", mask, config, torch.Generator().manual_seed(0))
    keep = guidance.latent_mask(mask, z0)[0, 0]  # 1 inside
    assert torch.equal(z[..., keep == 0], z0[..., keep == 0])  # alpha_last = 1 restores the source outside
    assert (z[..., keep == 1] - z0[..., keep == 1]).abs().mean() > 0.05
    out = slamp_image(guidance, image, "gold", mask, config, torch.Generator().manual_seed(0))
    assert out.shape == image.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="rectified-flow"):
        slamp_latents(Guidance(GuidanceConfig(backend="tiny-sd", resolution=32)), image, "gold", mask, config)
