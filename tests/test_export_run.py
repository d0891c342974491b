"""``v3d export mesh`` on trained runs: a tiny vision3d-splat run end to end, SDF dispatch, bad input, ns-export."""

from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import pytest
import torch
import trimesh
from typer.testing import CliRunner

from vision3d.cli import app
from vision3d.data.bundled import bundled_scene_path
from vision3d.errors import CheckpointError, CheckpointNotFoundError
from vision3d.export.from_run import MeshExportConfig, RunError, load_run, mesh_run
from vision3d.export.marching_cubes import EmptyMeshError
from vision3d.methods import run

GT_MESH = bundled_scene_path() / "mesh.ply"


@pytest.fixture(scope="module")
def splat_run(tmp_path_factory):
    """A vision3d-splat run of 5 steps on 8 views of the bundled scene, moved away from where it was trained."""
    from vision3d.methods.splat.config import vision3d_splat

    root = tmp_path_factory.mktemp("splat")
    config = run.configure(vision3d_splat.config, bundled_scene_path(), root / "train", max_steps=5, num_train_views=8)
    trainer = run.train(config)
    moved = root / "moved"
    shutil.copytree(trainer.base_dir, moved)  # config.yml's output_dir now points elsewhere: export must not care
    return moved


@pytest.fixture(scope="module")
def loaded(splat_run):
    return load_run(splat_run)


def test_export_mesh_of_a_splat_run_through_the_cli(splat_run, loaded):
    output = splat_run / "exported" / "mesh.glb"
    result = CliRunner().invoke(app, ["export", "mesh", str(splat_run), "--output", str(output),
                                      "--resolution", "128", "--gt", str(GT_MESH), "--threshold", "0.05"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "vertices" in result.output and "watertight" in result.output and "F-score@0.05" in result.output
    mesh = trimesh.load(output, force="mesh", process=False)
    assert len(mesh.faces) > 1000 and mesh.visual.vertex_colors[:, :3].std() > 5  # coloured, not one flat colour
    # written in the scene's own frame: back in the model's frame it lies inside the scene box
    model_points = loaded.to_model_frame(mesh.vertices)
    box = loaded.scene_box
    assert np.all(model_points >= box[0] - 1e-5) and np.all(model_points <= box[1] + 1e-5)
    # and it lies on the ground-truth surface the seed points came from (5 steps barely move them)
    chamfer = float(result.output.split("Chamfer-L1 ")[1].split()[0])
    assert np.isfinite(chamfer) and chamfer < 0.2


def test_model_frame_round_trips(loaded):
    points = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_allclose(loaded.to_scene_frame(loaded.to_model_frame(points)), points, atol=1e-9)


def test_a_model_that_offers_an_sdf_is_meshed_by_marching_cubes(loaded, monkeypatch):
    center, radius = torch.tensor([0.1, 0.0, -0.1]), 0.3
    sdf = lambda p: (p - center.to(p)).norm(dim=-1) - radius  # noqa: E731
    colour = lambda p: torch.ones_like(p) * torch.tensor([0.0, 1.0, 0.0], device=p.device)  # noqa: E731
    monkeypatch.setattr(loaded.pipeline.model, "mesh_sdf", lambda: (sdf, colour), raising=False)
    mesh = mesh_run(loaded, MeshExportConfig(resolution=48, frame="dataparser"))
    assert np.abs(np.linalg.norm(mesh.vertices - center.numpy(), axis=1) - radius).max() < 1e-3
    assert mesh.is_watertight and np.all(mesh.visual.vertex_colors[:, 1] == 255)
    world = mesh_run(loaded, MeshExportConfig(resolution=48))
    np.testing.assert_allclose(world.vertices, loaded.to_scene_frame(mesh.vertices), atol=1e-9)


def test_a_model_without_depth_or_sdf_is_a_one_line_error(loaded, monkeypatch):
    render = loaded.pipeline.model.get_outputs_for_camera
    monkeypatch.setattr(loaded.pipeline.model, "get_outputs_for_camera",
                        lambda camera: {k: v for k, v in render(camera).items() if k != "depth"})
    with pytest.raises(RunError, match="renders no depth and offers no SDF") as err:
        mesh_run(loaded)
    assert str(loaded.config_path) in str(err.value) and "\n" not in str(err.value)


def test_a_distorted_training_camera_is_rendered_as_the_pinhole_camera_that_fusion_assumes(loaded, monkeypatch):
    """TSDF fusion back-projects each render through K alone, so a lens's distortion must not reach the renderer
    (nerfacto would cast distorted rays and the fused surface would bend at the image borders)."""
    from vision3d.export.from_run import render_training_views

    cameras = loaded.pipeline.datamanager.train_dataparser_outputs.cameras
    monkeypatch.setattr(cameras, "distortion_params", torch.tensor([0.1, -0.02, 0.0, 0.0, 0.001, 0.0]).repeat(len(cameras), 1))
    render, rendered = loaded.pipeline.model.get_outputs_for_camera, []
    monkeypatch.setattr(loaded.pipeline.model, "get_outputs_for_camera", lambda camera: rendered.append(camera) or render(camera))
    views = list(render_training_views(loaded))
    assert len(views) == len(rendered) == len(cameras)
    assert all(camera.distortion_params is None for camera in rendered)
    assert cameras.distortion_params.abs().sum() > 0  # the run's own cameras keep their lens
    np.testing.assert_allclose(views[0].camera.K, cameras.get_intrinsics_matrices()[0].numpy(), rtol=1e-6)


def test_an_empty_tsdf_names_the_run(loaded):
    with pytest.raises(EmptyMeshError, match=r"empty TSDF.*reached --min-accumulation 1.5 \(highest [\d.]+\)") as err:
        mesh_run(loaded, MeshExportConfig(min_accumulation=1.5, voxel_size=0.05))  # every pixel is background
    assert str(loaded.config_path) in str(err.value) and "\n" not in str(err.value)


def _copy_run(splat_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(splat_run, copy, ignore=shutil.ignore_patterns("exported"))
    return copy


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: text.replace("log_gradients: false\n", "log_gradients: false\nsteps_per_coffee: 3\n"),
     r"another version .*steps_per_coffee unknown"),
    (lambda text: text.replace("splat.model.SplatModelConfig", "splat.model.SplatModelConfigV0"),
     r"not a config this version can read"),
    (lambda text: text.replace("method_name: vision3d-splat", "method_name: gone-method"),
     r"method 'gone-method' is not installed"),
    (lambda text: "just: text\n", r"not a nerfstudio run config"),
])
def test_bad_configs_are_one_line_errors_naming_the_file(splat_run, tmp_path, edit, message):
    copy = _copy_run(splat_run, tmp_path)
    config = copy / "config.yml"
    config.write_text(edit(config.read_text()))
    with pytest.raises(RunError, match=message) as err:
        load_run(copy)
    assert str(err.value).startswith(str(config)) and "\n" not in str(err.value)


def test_a_config_saved_before_new_defaulted_fields_loads_with_their_defaults(splat_run, tmp_path, capsys):
    copy = _copy_run(splat_run, tmp_path)
    config = copy / "config.yml"
    text = config.read_text()
    older = re.sub(r"viewer_min_refresh_s: .*\n", "", text)  # a field added in session 11 (simple default)
    older = older.replace("      seed_points_min_views: 2\n", "")  # nested, in the dataparser
    # a default_factory field: without it nerfstudio's setup fails with an AttributeError
    older = older.replace("  _target: !!python/name:nerfstudio.pipelines.base_pipeline.VanillaPipeline ''\n", "")
    assert len(older) < len(text) - 100
    config.write_text(older)
    loaded = load_run(copy)
    assert loaded.config.viewer_min_refresh_s == 0.5
    assert loaded.config.pipeline.datamanager.dataparser.seed_points_min_views == 2
    assert loaded.pipeline.model.num_points > 0
    log = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert log.count("set to their defaults") == 1, log
    for name in ("viewer_min_refresh_s", "pipeline._target", "pipeline.datamanager.dataparser.seed_points_min_views"):
        assert name in log, log


def test_a_missing_field_without_default_stays_a_one_line_error(tmp_path):
    from vision3d.export.from_run import check_config_version

    @dataclasses.dataclass
    class Inner:
        needed: int
        optional: float = 1.0

    @dataclasses.dataclass
    class Outer:
        inner: Inner = dataclasses.field(default_factory=lambda: Inner(3))
        listed: list = dataclasses.field(default_factory=list)

    saved = Outer.__new__(Outer)  # as yaml.load builds it: no __init__, only the saved fields
    saved.inner = Inner.__new__(Inner)
    saved.inner.needed = 5
    assert sorted(check_config_version(tmp_path / "config.yml", saved)) == ["inner.optional", "listed"]
    assert saved.inner.optional == 1.0 and saved.listed == []
    broken = Outer.__new__(Outer)
    broken.inner = Inner.__new__(Inner)
    broken.inner.optional = 2.0
    with pytest.raises(RunError, match=r"config.yml: written by another version .*inner\.needed missing") as err:
        check_config_version(tmp_path / "config.yml", broken)
    assert "\n" not in str(err.value) and "listed" not in str(err.value)


def test_missing_and_corrupt_checkpoints_are_one_line_errors(splat_run, tmp_path):
    with pytest.raises(RunError, match="no such run config"):
        load_run(tmp_path / "nowhere")
    copy = _copy_run(splat_run, tmp_path)
    (checkpoint,) = (copy / "nerfstudio_models").glob("step-*.ckpt")
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(CheckpointError, match="corrupt checkpoint") as err:
        load_run(copy)
    assert str(checkpoint) in str(err.value) and "\n" not in str(err.value)
    checkpoint.unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"nerfstudio_models: no checkpoint"):
        load_run(copy)


def test_ns_export_gaussian_splat_works_on_a_det_gs_run(tmp_path):
    """What ``ns-export gaussian-splat --load-config RUN/config.yml`` runs (tyro builds this class, then main())."""
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    from vision3d.methods.det_gs.config import det_gs

    config = run.configure(det_gs.config, bundled_scene_path(), tmp_path / "det", max_steps=2, num_train_views=6)
    config.pipeline.datamanager.depth_prior.source = "monocular_like"
    trainer = run.train(config)
    ExportGaussianSplat(load_config=trainer.base_dir / "config.yml", output_dir=tmp_path / "export").main()
    header = (tmp_path / "export" / "splat.ply").read_bytes()[:3000].decode(errors="ignore")
    assert f"element vertex {trainer.pipeline.model.num_points}" in header
    assert all(f"property float {name}" in header for name in ("x", "opacity", "f_dc_0", "scale_0", "rot_0"))
