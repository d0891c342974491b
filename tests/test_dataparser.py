"""The vision3d-data dataparser: nerfstudio's parser plus validation and seeded sparse-view splits."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import pytest
from scene_factory import write_scene

from vision3d.data.dataparser import Vision3DDataParserConfig
from vision3d.data.scene import SceneError


def test_registered_as_nerfstudio_dataparser():
    names = {ep.name for ep in entry_points(group="nerfstudio.dataparser_configs")}
    assert "vision3d-data" in names


def test_sparse_split_through_nerfstudio(tmp_path):
    root = write_scene(tmp_path / "scene", n_views=8)
    config = Vision3DDataParserConfig(data=root, num_train_views=3, split_seed=1)
    parser = config.setup()
    train = parser.get_dataparser_outputs("train")
    test = parser.get_dataparser_outputs("test")
    assert len(train.image_filenames) == 3 and len(test.image_filenames) == 5
    assert not set(train.image_filenames) & set(test.image_filenames)
    assert len(train.metadata["depth_filenames"]) == 3
    assert train.cameras.camera_to_worlds.shape == (3, 3, 4)
    # Same seed, same views.
    again = Vision3DDataParserConfig(data=root, num_train_views=3, split_seed=1).setup()
    assert again.get_dataparser_outputs("train").image_filenames == train.image_filenames


@pytest.mark.parametrize("num_train_views", [None, 3])
def test_camera_extent_is_nerfstudios_scale_over_every_frame(tmp_path, num_train_views):
    """The splat model's length unit: exactly 1 about the origin in nerfstudio's default frame, for a split's
    train and test cameras alike; in the scene's own frame the extent and centre of all its cameras."""
    import torch

    root = write_scene(tmp_path / "scene", n_views=8)
    default = Vision3DDataParserConfig(data=root, num_train_views=num_train_views).setup()
    for split in ("train", "test"):
        metadata = default.get_dataparser_outputs(split).metadata
        assert metadata["camera_extent"] == 1.0 and metadata["camera_centre"] == [0.0, 0.0, 0.0]
    own = Vision3DDataParserConfig(data=root, num_train_views=num_train_views, orientation_method="none",
                                   center_method="none", auto_scale_poses=False, scale_factor=100.0).setup()
    positions = torch.tensor([f["transform_matrix"] for f in json.loads((root / "transforms.json").read_text())["frames"]])
    positions = 100 * positions[:, :3, 3].double()
    metadata = own.get_dataparser_outputs("train").metadata
    assert metadata["camera_extent"] == pytest.approx(float((positions - positions.mean(0)).abs().max()), rel=1e-5)
    assert metadata["camera_centre"] == pytest.approx(positions.mean(0).tolist(), abs=1e-5 * metadata["camera_extent"])


def test_bad_scene_fails_before_nerfstudio(tmp_path):
    root = write_scene(tmp_path / "scene", n_views=4)
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"][1]["transform_matrix"] = [[0] * 4] * 3 + [[0, 0, 0, 1]]
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError, match="frame 1 .*not invertible"):
        Vision3DDataParserConfig(data=root).setup().get_dataparser_outputs("train")


def test_bundled_scene_has_sfm_like_seed_points():
    """sparse_pc.ply: a few thousand coloured points on the ground-truth surface, read by nerfstudio as seeds."""
    import numpy as np
    import trimesh

    from vision3d.data.bundled import bundled_scene_path

    scene = bundled_scene_path()
    meta = json.loads((scene / "transforms.json").read_text())
    cloud = trimesh.load(scene / meta["ply_file_path"])
    assert 2000 <= len(cloud.vertices) <= 5000
    mesh = trimesh.load(scene / meta["mesh_file_path"], force="mesh")
    _, distance, _ = trimesh.proximity.closest_point(mesh, cloud.vertices[::10])
    assert np.max(distance) < 1e-3  # on the surface (the scene is ~5 m wide)
    colours = np.asarray(cloud.colors)[:, :3].astype(float)
    assert colours.std() > 10  # coloured from the images, not a constant
    outputs = (
        Vision3DDataParserConfig(data=scene, load_3D_points=True).setup().get_dataparser_outputs("train")
    )
    assert outputs.metadata["points3D_xyz"].shape[1] == 3 and len(outputs.metadata["points3D_rgb"]) > 2000


def test_seed_points_come_from_the_training_views_only():
    """Under a sparse-view split, points that fewer than two training views see are dropped and the rest are
    coloured from training pixels only: held-out views leak nothing into the seeds."""
    import numpy as np

    from vision3d.data.bundled import bundled_scene_path

    scene = bundled_scene_path()
    every = Vision3DDataParserConfig(data=scene, load_3D_points=True, seed_points_from_split=False).setup()
    all_points = every.get_dataparser_outputs("train").metadata["points3D_xyz"]
    sparse = (
        Vision3DDataParserConfig(data=scene, load_3D_points=True, num_train_views=3)
        .setup()
        .get_dataparser_outputs("train")
    )
    kept = sparse.metadata["points3D_xyz"]
    assert len(all_points) == 4000 and 200 < len(kept) < 0.8 * len(all_points)
    assert len(sparse.metadata["points3D_rgb"]) == len(kept)
    # The kept points are a subset of the file's (same dataparser frame for every split).
    distance = np.linalg.norm(kept.numpy()[:, None] - all_points.numpy()[None], axis=-1).min(axis=1)
    assert distance.max() < 1e-5
    # With every view in the training split, (almost) every point stays.
    everything = (
        Vision3DDataParserConfig(data=scene, load_3D_points=True, eval_mode="all")
        .setup()
        .get_dataparser_outputs("train")
    )
    assert len(everything.metadata["points3D_xyz"]) > 0.95 * len(all_points)
