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


def test_bad_scene_fails_before_nerfstudio(tmp_path):
    root = write_scene(tmp_path / "scene", n_views=4)
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"][1]["transform_matrix"] = [[0] * 4] * 3 + [[0, 0, 0, 1]]
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError, match="frame 1 .*not invertible"):
        Vision3DDataParserConfig(data=root).setup().get_dataparser_outputs("train")
