"""`v3d data render`: a real mesh rendered with Debian's Blender gives a consistent nerfstudio scene.

The render uses CGAL's cow (fetched with apt; no fixture or bundled scene is built from it), 3 forward-facing
views at 32x32 and 4 spp, and checks the files, depth reprojection between views against the GT poses, the
Vector-pass flow against flow from depth and poses, the GT mesh against the depth, and the cache.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from vision3d.data import render
from vision3d.data.consistency import backproject, flow_from_depth, reprojection_depth_error
from vision3d.data.render import BlenderNotFoundError, RenderError, render_scene


def _have_blender() -> bool:
    try:
        return bool(render.find_blender())
    except BlenderNotFoundError:
        return False


BLENDER_MISSING = "Debian's blender is not installed (apt-get install -y blender python3-numpy)"
needs_blender = pytest.mark.skipif(not _have_blender(), reason=BLENDER_MISSING)


@pytest.fixture(scope="module")
def cow_mesh():
    from vision3d.data.apt_data import AptUnavailableError, fetch_mesh

    try:
        return fetch_mesh("cow")
    except AptUnavailableError as err:
        pytest.skip(f"apt cannot fetch libcgal-demo: {err}")


@pytest.fixture(scope="module")
def rendered(cow_mesh, tmp_path_factory):
    if not _have_blender():
        pytest.skip(BLENDER_MISSING)
    out = tmp_path_factory.mktemp("cow")
    start = time.time()
    render_scene(cow_mesh, out, path="forward", views=3, width=32, height=32, spp=4, progress=False)
    return out, time.time() - start


def _load(out):
    meta = json.loads((out / "transforms.json").read_text())
    K = np.array([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1.0]])  # noqa: N806
    depths = [np.array(Image.open(out / f["depth_file_path"])).astype(np.float64) * 1e-3 for f in meta["frames"]]
    poses = [np.array(f["transform_matrix"]) for f in meta["frames"]]
    return meta, K, depths, poses


@pytest.mark.apt
@pytest.mark.blender
@needs_blender
def test_transforms_json_follows_nerfstudio(rendered):
    out, _ = rendered
    meta, _, depths, _ = _load(out)
    assert meta["camera_model"] == "OPENCV"
    assert (meta["w"], meta["h"]) == (32, 32) and meta["cx"] == 16 and meta["cy"] == 16
    assert len(meta["frames"]) == 3
    for frame in meta["frames"]:
        c2w = np.array(frame["transform_matrix"])
        assert c2w.shape == (4, 4) and np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-5)
        image = np.array(Image.open(out / frame["file_path"]))
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 5
        depth_png = Image.open(out / frame["depth_file_path"])
        assert depth_png.mode.startswith("I") and np.array(depth_png).dtype in (np.uint16, np.int32)
        normals = np.array(Image.open(out / frame["normal_file_path"]))
        assert normals.shape == (32, 32, 3)
    # open path: the first two views flow to the next one, the last has none
    assert [("flow_file_path" in f) for f in meta["frames"]] == [True, True, False]
    assert all((d > 0).mean() > 0.3 for d in depths)  # the model and its ground fill the views
    assert meta["source"]["name"] == "cow" and meta["source"]["package"] == "libcgal-demo"
    render = meta["render"]
    assert render["spp"] == 4 and render["camera_path"] == "forward" and render["blender_version"].startswith("3.")
    assert render["hdri"]["name"] == "forest"
    assert (out / meta["mesh_file_path"]).is_file()


@pytest.mark.apt
@pytest.mark.blender
@needs_blender
def test_depth_reprojects_between_views(rendered):
    meta, K, depths, poses = _load(rendered[0])  # noqa: N806
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        errors = reprojection_depth_error(depths[a], depths[b], K, poses[a], poses[b])
        assert errors.size > 100
        assert np.median(errors) < 0.01, (a, b, np.median(errors))


@pytest.mark.apt
@pytest.mark.blender
@needs_blender
def test_flow_matches_depth_and_poses(rendered):
    out = rendered[0]
    meta, K, depths, poses = _load(out)  # noqa: N806
    for i in range(2):
        flow = np.load(out / meta["frames"][i]["flow_file_path"])
        assert flow.shape == (32, 32, 2) and flow.dtype == np.float32
        expected = flow_from_depth(depths[i], K, poses[i], poses[i + 1])
        valid = np.isfinite(expected).all(-1)
        epe = np.linalg.norm(flow - expected, axis=-1)[valid]
        assert np.linalg.norm(expected, axis=-1)[valid].mean() > 0.5  # the camera did move
        assert np.median(epe) < 0.1, np.median(epe)


@pytest.mark.apt
@pytest.mark.blender
@needs_blender
def test_mesh_is_the_rendered_surface(rendered):
    import trimesh

    out = rendered[0]
    meta, K, depths, poses = _load(out)  # noqa: N806
    mesh = trimesh.load(out / meta["mesh_file_path"], process=False)
    points = backproject(depths[0], K, poses[0]).reshape(-1, 3)
    points = points[np.isfinite(points).all(-1)]
    _, distance, _ = trimesh.proximity.closest_point(mesh, points[:: max(1, len(points) // 300)])
    assert np.median(distance) < 5e-3  # metres, for a 1 m model seen at 32 px


@pytest.mark.apt
@pytest.mark.blender
@needs_blender
def test_same_arguments_return_the_cached_scene(rendered, cow_mesh):
    out, seconds = rendered
    before = (out / "transforms.json").stat().st_mtime_ns
    start = time.time()
    render_scene(cow_mesh, out, path="forward", views=3, width=32, height=32, spp=4, progress=False)
    assert time.time() - start < min(2.0, seconds / 2)
    assert (out / "transforms.json").stat().st_mtime_ns == before


@pytest.mark.blender
@needs_blender
def test_blender_failure_shows_its_log(tmp_path):
    bad = tmp_path / "broken.off"
    bad.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")  # promises 3 vertices and a face, holds 2
    with pytest.raises(RenderError, match="Blender failed") as info:
        render_scene(bad, tmp_path / "out", views=2, width=16, height=16, spp=1, progress=False)
    assert "broken.off" in str(info.value) and "last lines of Blender's log" in str(info.value)


@pytest.fixture
def no_blender(tmp_path, monkeypatch):
    """A machine without Debian's blender nor blender-data, whichever machine runs the test."""
    monkeypatch.setenv("VISION3D_BLENDER", str(tmp_path / "no-blender-here"))
    monkeypatch.setattr(render, "HDRI_DIR", tmp_path / "no-blender-data")


@pytest.fixture
def blender_stand_in(tmp_path, monkeypatch):
    """An executable where Blender is looked for, which fails if it is ever run."""
    fake = tmp_path / "blender"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("VISION3D_BLENDER", str(fake))


def _triangle(tmp_path):
    model = tmp_path / "tri.off"
    model.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    return model


def test_missing_blender_says_how_to_install(tmp_path, no_blender):
    with pytest.raises(BlenderNotFoundError, match="apt-get install -y blender python3-numpy"):
        render_scene(_triangle(tmp_path), tmp_path / "out", views=2, progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_hdri_says_to_install_blender_data(tmp_path, monkeypatch, blender_stand_in):
    """Blender is there but blender-data's HDRIs are not."""
    monkeypatch.setattr(render, "HDRI_DIR", tmp_path / "no-blender-data")
    with pytest.raises(RenderError, match="HDRI 'forest' not found .*install Debian's blender-data"):
        render_scene(_triangle(tmp_path), tmp_path / "out", views=2, progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(RenderError, match="model file not found: .*nope.off"):
        render_scene(tmp_path / "nope.off", tmp_path / "out", progress=False)


def test_unknown_camera_path_is_a_clear_error(tmp_path):
    with pytest.raises(RenderError, match="unknown camera path 'spiral'"):
        render_scene(tmp_path / "nope.off", tmp_path / "out", path="spiral", progress=False)


@pytest.mark.parametrize(
    ("override", "problem"),
    [({"spp": 0}, "samples per pixel"), ({"fov_deg": 500.0}, "field of view"), ({"width": 0}, "resolution"),
     ({"hdri_strength": -1.0}, "HDRI strength")],
)  # fmt: skip
def test_nonsense_render_settings_fail_before_blender_runs(tmp_path, override, problem):
    with pytest.raises(RenderError, match=problem):
        render_scene(tmp_path / "nope.off", tmp_path / "out", progress=False, **override)
    assert not (tmp_path / "out").exists()


@pytest.mark.apt
@pytest.mark.blender
@needs_blender
def test_model_formats_import_alike(rendered, cow_mesh, tmp_path):
    """glb (Blender 3.4's importer needs our numpy shim, and converts Y-up itself) and ply (raw axes, our
    up-axis rotation) give the same normalised model as the OFF file rendered above."""
    import trimesh

    mesh = trimesh.load(cow_mesh)
    reference = np.array(json.loads((rendered[0] / "transforms.json").read_text())["render"]["model_bounds"])
    for ext in ("glb", "ply"):
        model = tmp_path / f"cow.{ext}"
        mesh.export(model)
        out = render_scene(model, tmp_path / ext, views=2, width=16, height=16, spp=1, ground="none", progress=False)
        bounds = np.array(json.loads((out / "transforms.json").read_text())["render"]["model_bounds"])
        assert np.allclose(bounds, reference, atol=1e-4), ext
    assert reference[1, 2] - reference[0, 2] > reference[1, 1] - reference[0, 1]  # the Y-up cow stands upright


def test_v3d_data_render_reports_a_missing_model_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    v3d = Path(sys.executable).parent / "v3d"
    result = subprocess.run([str(v3d), "data", "render", str(tmp_path / "nope.off"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: model file not found:") and "Traceback" not in result.stderr


@pytest.mark.parametrize("machine", ["no_blender", "blender_stand_in"])
def test_a_folder_with_other_files_is_not_overwritten(tmp_path, request, machine):
    """The folder is checked before Blender and its assets, so the answer is the same on any machine."""
    request.getfixturevalue(machine)
    out = tmp_path / "my_capture"
    (out / "images").mkdir(parents=True)
    with pytest.raises(RenderError, match="did not write"):
        render_scene(_triangle(tmp_path), out, views=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["images"]


@pytest.mark.apt
@pytest.mark.blender
@needs_blender
def test_rendered_scene_loads_through_nerfstudio_dataparsers(rendered):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from vision3d.data.dataparser import Vision3DDataParserConfig

    out, _ = rendered
    ours = Vision3DDataParserConfig(data=out, num_train_views=2).setup().get_dataparser_outputs("train")
    assert len(ours.image_filenames) == 2 and len(ours.metadata["depth_filenames"]) == 2
    assert ours.metadata["mesh_file_path"].is_file()
    theirs = NerfstudioDataParserConfig(data=out, eval_mode="all").setup().get_dataparser_outputs("train")
    assert len(theirs.image_filenames) == 3
    assert theirs.cameras.width[0].item() == 32 and float(theirs.cameras.fx[0]) == pytest.approx(
        json.loads((out / "transforms.json").read_text())["fl_x"])


@pytest.mark.apt
@pytest.mark.blender
@needs_blender
def test_render_writes_sfm_like_seed_points(rendered, cow_mesh):
    """sparse_pc.ply (ply_file_path): points on the GT mesh that two views see, coloured from the images;
    a cached scene without them gets them without running Blender again."""
    import trimesh

    out, seconds = rendered
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["ply_file_path"] == "sparse_pc.ply" and meta["sparse_points"]["min_views"] == 2
    cloud = trimesh.load(out / "sparse_pc.ply")
    assert 100 <= len(cloud.vertices) <= 4000
    mesh = trimesh.load(out / meta["mesh_file_path"], force="mesh")
    _, distance, _ = trimesh.proximity.closest_point(mesh, cloud.vertices[::10])
    assert np.max(distance) < 1e-3
    (out / "sparse_pc.ply").unlink()
    del meta["ply_file_path"], meta["sparse_points"]
    (out / "transforms.json").write_text(json.dumps(meta))
    start = time.time()
    render_scene(cow_mesh, out, path="forward", views=3, width=32, height=32, spp=4, progress=False, sparse_points=500)
    assert time.time() - start < seconds / 2
    assert len(trimesh.load(out / "sparse_pc.ply").vertices) == 500


@pytest.mark.apt
@pytest.mark.blender
@needs_blender
@pytest.mark.parametrize("parts", ["slabs:2", "models"])
def test_part_ids_come_from_the_object_index_pass(cow_mesh, tmp_path, parts):
    """RoMaP's part masks: the cow cut in two slabs, or two cows side by side; ids 1..2 only on the model."""
    extra = (str(cow_mesh),) if parts == "models" else ()
    out = render_scene(cow_mesh, tmp_path / "out", views=2, width=24, height=24, spp=1, ground="none",
                       parts=parts, extra_models=extra, progress=False)  # fmt: skip
    meta = json.loads((out / "transforms.json").read_text())
    assert len(json.loads((out / "part_ids" / "parts.json").read_text())) == 2
    for frame in meta["frames"]:
        ids = np.array(Image.open(out / "part_ids" / frame["file_path"].split("/")[-1]))
        depth = np.array(Image.open(out / frame["depth_file_path"]))
        assert set(np.unique(ids)) == {0, 1, 2}
        assert np.all(depth[ids > 0] > 0), "a part id where the model is not hit"
        assert (ids[depth > 0] > 0).mean() > 0.9


def test_unknown_parts_mode_fails_before_blender_runs(tmp_path):
    with pytest.raises(RenderError, match="parts must be models, objects or slabs:K"):
        render_scene(tmp_path / "nope.off", tmp_path / "out", parts="slabs:1", progress=False)


def test_rendered_scene_feeds_the_pose_pairs(rendered):
    """A `v3d data render` scene read by the pose pipeline (GeLoc3r's seen-scene protocol trains on these): its
    OpenCV poses and metric depth send view 1's pixels to view 2's surface (depth agrees within 3 %) and colour."""
    import torch

    from vision3d.pose.data import PairDataset, frames_from_nerfstudio
    from vision3d.pose.gcr import depth_correspondences

    fs = frames_from_nerfstudio(rendered[0])
    s = PairDataset([fs], [(0, 0, 1)], image_size=(32, 32))[0]
    p1, _, q2 = depth_correspondences(s["depth1"], s["depth2"], s["K1"], s["K2"], s["T21"], 200,
                                      generator=torch.Generator().manual_seed(0))
    drawn = int((s["depth1"] > 0).sum())
    assert len(p1) > 0.5 * min(drawn, 200)  # visible: view 2's depth agrees with the moved point
    c1 = s["img1"][:, p1[:, 1].long(), p1[:, 0].long()]
    c2 = s["img2"][:, q2[:, 1].long(), q2[:, 0].long()]
    c_rand = s["img2"][:, torch.randint(0, 32, (len(p1),)), torch.randint(0, 32, (len(p1),))]
    assert (c1 - c2).abs().mean() < 0.5 * (c1 - c_rand).abs().mean()
