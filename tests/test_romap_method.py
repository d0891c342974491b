"""romap as an ns-train method: labels from part masks, a target-image edit confined to the part, export."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from nerfstudio.models.splatfacto import RGB2SH
from PIL import Image
from romap_scene import write_two_part_scene

from vision3d.methods import run
from vision3d.methods.romap.config import COLOUR_LR, romap
from vision3d.methods.romap.guidance import Guidance, GuidanceConfig
from vision3d.methods.romap.masks import corrupt_part_masks, read_part_ids, resolve_part
from vision3d.methods.romap.slamp import SlampConfig

LABEL_STEPS, EDIT_STEPS = 20, 60


def splat_checkpoint(config, gaussians, path):
    """A plain splat checkpoint (no romap keys) holding ``gaussians`` in the dataparser's frame."""
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    outputs = trainer.pipeline.datamanager.train_dataparser_outputs
    transform, scale = outputs.dataparser_transform.float(), float(outputs.dataparser_scale)
    state = {k: v for k, v in trainer.pipeline.state_dict().items()
             if not any(s in k for s in ("label_coeffs", "selected", "train_centres", "editing"))}  # fmt: skip
    n = gaussians["means"].shape[0]
    state["_model.gauss_params.means"] = scale * (gaussians["means"] @ transform[:, :3].T + transform[:, 3])
    state["_model.gauss_params.scales"] = torch.log(gaussians["scales"] * scale)
    state["_model.gauss_params.quats"] = gaussians["quats"]
    state["_model.gauss_params.features_dc"] = RGB2SH(gaussians["colours"])
    state["_model.gauss_params.features_rest"] = torch.zeros(n, 15, 3)
    state["_model.gauss_params.opacities"] = torch.logit(gaussians["opacities"])[:, None]
    # the optimisers as a splat run saves them, with its own rates (loading restores those rates)
    optimizers = {k: o.state_dict() for k, o in trainer.optimizers.optimizers.items() if k != "label_coeffs"}
    for k in ("features_dc", "features_rest"):
        optimizers[k]["param_groups"][0]["lr"] = 0.0025
    torch.save({"step": 99, "pipeline": state, "optimizers": optimizers, "scalers": trainer.grad_scaler.state_dict()},
               path)  # fmt: skip
    return {k.removeprefix("_model.gauss_params."): v for k, v in state.items() if "gauss_params" in k}


@torch.no_grad()
def renders(model, cameras, params=None):
    """Eval RGB [C, H, W, 3] and 3D-mask coverage [C, H, W] of ``cameras`` (with ``params``: of those Gaussians)."""
    saved = {k: v.detach().clone() for k, v in model.gauss_params.items()}
    if params is not None:
        for k, v in params.items():
            model.gauss_params[k].data.copy_(v.to(model.device))
    model.eval()
    outs = [model.get_outputs(cameras[i : i + 1].to(model.device)) for i in range(len(cameras))]
    for k, v in saved.items():
        model.gauss_params[k].data.copy_(v)
    return torch.stack([o["rgb"] for o in outs]).cpu(), torch.stack([o["mask_3d"][..., 0] for o in outs]).cpu()


def test_labels_then_target_edit_changes_only_the_part_and_exports(tmp_path):
    root, gaussians = write_two_part_scene(tmp_path / "scene")
    config = run.configure(romap.config, root, tmp_path / "out", max_steps=LABEL_STEPS + EDIT_STEPS)
    config.pipeline.model.label_steps = LABEL_STEPS
    config.pipeline.model.part = "left"  # part 1, by its name in parts.json
    config.pipeline.model.background_color = "black"
    config.pipeline.datamanager.target_dir = root / "targets"
    original = splat_checkpoint(copy.deepcopy(config), gaussians, tmp_path / "splat.ckpt")
    config.load_checkpoint = tmp_path / "splat.ckpt"
    trainer = run.train(config)
    model = trainer.pipeline.model

    # the edit runs at romap's colour rate, not at the rate the splat checkpoint saved
    assert trainer.optimizers.optimizers["features_dc"].param_groups[0]["lr"] == COLOUR_LR

    # phase 1: the 3D mask of "left" is the part-1 Gaussians
    truth = gaussians["part"] == 1
    assert bool(model.editing)
    agreement = (model.selected.cpu() == truth).float().mean()
    assert agreement > 0.95, f"3D mask agrees with the true part on {agreement:.1%} of Gaussians"

    # phase 2: unselected Gaussians are bit-identical; pixels the selected Gaussians do not reach (coverage
    # < 1 % before and after the edit) keep their colour
    unselected = ~model.selected.cpu()
    for name, value in original.items():
        assert torch.equal(model.gauss_params[name].detach().cpu()[unselected], value[unselected]), name
    dataset = trainer.pipeline.datamanager.train_dataset
    cameras = dataset.cameras
    (before, cover_before), (after, cover_after) = renders(model, cameras, original), renders(model, cameras)
    ids = torch.stack([read_part_ids(root / "part_ids" / p.name) for p in dataset.image_filenames])
    reached = torch.maximum(cover_before, cover_after) > 0.01
    outside = (after - before).abs().amax(-1)[~reached]
    assert outside.max() < 0.01, f"outside the 3D mask's footprint: max change {outside.max():.4f}"
    targets = torch.stack([torch.from_numpy(np.asarray(Image.open(root / "targets" / p.name)))
                           for p in dataset.image_filenames]).float() / 255  # fmt: skip
    core = ids == 1
    err_before = (before - targets).abs()[core].mean()
    err_after = (after - targets).abs()[core].mean()
    assert err_after < 0.1 * err_before, f"inside the part: error to the target {err_before:.3f} -> {err_after:.3f}"

    # viewer outputs and the standard 3DGS export
    model.eval()
    with torch.no_grad():
        out = model.get_outputs_for_camera(cameras[:1].to(model.device))
    assert out["part_labels"].shape == (40, 40, 3) and out["mask_3d"].shape == (40, 40, 1)
    assert out["mask_3d"][core[0]].mean() > 0.5 and out["mask_3d"][ids[0] == 2].mean() < 0.1
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    ExportGaussianSplat(load_config=trainer.base_dir / "config.yml", output_dir=tmp_path / "export").main()
    header = (tmp_path / "export" / "splat.ply").read_bytes().split(b"end_header")[0].decode()
    assert f"element vertex {truth.numel()}" in header and "property float f_dc_0" in header

    # the guided path through the model: masked SDS (tiny SD3) plus a SLaMP anchor, gradients on the part only
    model.train()
    model.config.prompt, model.config.slamp = "a green blob", SlampConfig(steps=4, t_s=1)
    model.guidance = Guidance(GuidanceConfig(backend="tiny-sd3", resolution=32))
    out = model.get_outputs(cameras[:1].to(model.device))
    losses = model.edit_losses(out["rgb"], out["labels"], {"image_idx": 0})
    assert set(losses) == {"romap_sds", "romap_anchor"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grad = model.gauss_params["features_dc"].grad.abs().sum(-1).cpu()
    assert grad[unselected].max() == 0 and grad[~unselected].sum() > 0


class RedBlue(torch.nn.Module):
    """A stand-in segmentation network: background where dark, part 1 where red dominates, else part 2."""

    def forward(self, x):  # [1, 3, H, W] -> [1, 3, H, W] logits
        bright = x.sum(1, keepdim=True) > 0.3
        red = x[:, :1] > x[:, 2:3]
        return torch.cat([(~bright).float(), (bright & red).float(), (bright & ~red).float()], 1)


def colour_segmenter(path):
    torch.jit.save(torch.jit.script(RedBlue()), str(path))
    return path


def test_mask_sources_fail_clearly_and_corruption_is_view_inconsistent(tmp_path):
    root, _ = write_two_part_scene(tmp_path / "scene", n_views=3)
    assert resolve_part("right", ["left", "right"], 2) == 2
    with pytest.raises(ValueError, match="neither an id"):
        resolve_part("ears", ["left", "right"], 2)
    config = run.configure(romap.config, root, tmp_path / "out", max_steps=1)
    (root / "part_ids").rename(root / "other")
    with pytest.raises(FileNotFoundError, match="mask-dir DIR .* or .*segmenter"):
        config.setup(local_rank=0, world_size=1).setup()
    config.pipeline.datamanager.masks.segmenter = colour_segmenter(tmp_path / "segmenter.pt")
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    dataset = trainer.pipeline.datamanager.train_dataset
    assert dataset.metadata["romap_n_parts"] == 2
    data = dataset[0]
    truth = read_part_ids(root / "other" / dataset.image_filenames[0].name)
    assert (data["part_ids"] == truth).float().mean() > 0.9  # silhouettes: brightness vs the renderer's alpha > 0.5
    config.pipeline.datamanager.masks.segmenter = None
    (root / "other").rename(root / "part_ids")
    with pytest.raises(ValueError, match="give --load-checkpoint"):
        run.train(config)
    config.pipeline.datamanager.masks.mask_dir = root / "images"
    with pytest.raises(ValueError, match="colour mask but no part_colours"):
        config.setup(local_rank=0, world_size=1).setup()
    ids = torch.stack([read_part_ids(p) for p in sorted((root / "part_ids").glob("*.png"))])
    noisy = corrupt_part_masks(ids.repeat(2, 1, 1), 2, torch.Generator().manual_seed(0))
    wrong = (noisy != ids.repeat(2, 1, 1)).float().mean(dim=(1, 2))
    assert (wrong > 0.01).all() and wrong.std() > 0.005  # every view spoiled, each differently


def test_a_distorted_captures_part_masks_and_targets_land_on_the_undistorted_images_pixels(tmp_path):
    """nerfstudio undistorts (and crops) each cached image onto a new K; part ids and edit targets, read from files
    made for the distorted image, must follow it. The files split the view at the ray's undistorted x = 0.1 (ids)
    and ramp in it (targets), so on the undistorted image both are known functions of the new K's pixel."""
    from scene_factory import give_scene_a_lens, new_pixel_rays, write_scene

    size = 32
    root = write_scene(tmp_path / "scene", n_views=4, size=size, with_depth=False)
    x = give_scene_a_lens(root)[..., 0]
    ramp = lambda x: np.clip(0.5 + x, 0.0, 1.0)  # noqa: E731
    (root / "part_ids").mkdir()
    (root / "targets").mkdir()
    for image in sorted((root / "images").glob("*.png")):
        Image.fromarray(np.where(x < 0.1, 1, 2).astype(np.uint8)).save(root / "part_ids" / image.name)
        Image.fromarray(np.round(255 * np.repeat(ramp(x)[..., None], 3, -1)).astype(np.uint8)).save(root / "targets" / image.name)
    config = run.configure(romap.config, root, tmp_path / "out", max_steps=1)
    config.pipeline.datamanager.target_dir = root / "targets"
    manager = config.pipeline.datamanager.setup(device="cpu")
    data, camera = manager.cached_train[0], manager.train_dataset.cameras[0]
    shape = (int(camera.height), int(camera.width))
    assert int(camera.width) < size and data["part_ids"].shape == data["target_image"].shape[:2] == shape
    new_x = new_pixel_rays(camera)[..., 0]
    away = np.abs(new_x - 0.1) > 1.0 / float(camera.fx)  # a pixel or more from the split
    np.testing.assert_array_equal(data["part_ids"].numpy()[away], np.where(new_x < 0.1, 1, 2)[away])
    error = np.abs(data["target_image"][..., 0].numpy() - ramp(new_x))
    assert error.max() < 1.0 / float(camera.fx) + 1 / 255, error.max()  # nearest pixel: within one pixel's change
