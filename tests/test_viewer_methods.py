"""helixsurf, ir-nerf and romap in nerfstudio's viewer, ``ns-viewer``, ``ns-render`` and ``v3d export mesh``.

One tiny run per method (a few steps at 16-40 px, module fixture) and, per method, one test that calls the
commands' Python entry points in-process: every render mode of the model through the viewer's own render
state machine, ``ns-viewer --load-config`` up to its serving loop, a two-frame ``ns-render camera-path``
video (with ffmpeg), and the mesh export (marching cubes for helixsurf, TSDF for ir-nerf and romap). The
browser path is covered once, by ``test_viewer.py``'s Chromium test; ``ns-export gaussian-splat`` on a romap
run by ``test_romap_method.py``.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import viser

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method_runs import IR_NERF_VIEWS, helixsurf_config, ir_nerf_config, romap_config  # noqa: E402
from viewer_helpers import camera_path_json  # noqa: E402

from vision3d.export.from_run import MeshExportConfig, load_run, mesh_run  # noqa: E402
from vision3d.methods import run  # noqa: E402
from vision3d.viewer.browser import free_port  # noqa: E402
from vision3d.viewer.frame_rate import orbit_camera_states, viewer_frames  # noqa: E402

MODES = {"helixsurf": {"normals", "mvs_depth", "mvs_confidence", "sdf_level_set"}, "ir-nerf": set(),
         "romap": {"part_labels", "mask_3d"}}  # fmt: skip
"""Each method's own render modes (beside rgb, depth, accumulation), as docs/viewer.md lists them."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs of helixsurf, ir-nerf and romap, by method name: their run folders (the methods are registered
    by the package's entry points)."""
    root = tmp_path_factory.mktemp("method_runs")
    configs = {"helixsurf": helixsurf_config, "ir-nerf": ir_nerf_config, "romap": romap_config}
    return {method: run.train(make(root / method)).base_dir for method, make in configs.items()}


def _start_ns_viewer(config: Path, monkeypatch):
    """``ns-viewer --load-config`` in-process, up to its serving loop: returns nerfstudio's Viewer, serving."""
    from nerfstudio.scripts.viewer import run_viewer

    started = []

    class Serving(Exception):
        pass

    class RecordedViewer(run_viewer.ViewerState):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    def serve(_seconds):
        raise Serving

    monkeypatch.setattr(run_viewer, "ViewerState", RecordedViewer)
    for module in (viser._gui_api, viser._gui_handles):  # viser reads each icon from a 5 MB tar: once is enough here
        monkeypatch.setattr(module, "svg_from_icon", _cached_icon)
    monkeypatch.setattr(run_viewer.time, "sleep", serve)
    options = run_viewer.ViewerConfigWithoutNumRays(websocket_port=free_port(), websocket_host="127.0.0.1")
    with pytest.raises(Serving):
        run_viewer.RunViewer(load_config=config, viewer=options).main()
    monkeypatch.undo()
    return started[0]


@functools.cache
def _cached_icon(name: str) -> str:
    from viser._icons import svg_from_icon

    return svg_from_icon(name)


@pytest.mark.parametrize("method", ["helixsurf", "ir-nerf", "romap"])
def test_viewer_modes_ns_viewer_ns_render_and_mesh_export(runs, method, tmp_path, monkeypatch):
    loaded = load_run(runs[method])
    model = loaded.pipeline.model
    c2w = loaded.pipeline.datamanager.train_dataparser_outputs.cameras.camera_to_worlds[0]
    if method == "ir-nerf":  # its dataparser's cameras are placeholders: look from an estimated pose
        c2w = model.mesh_cameras().camera_to_worlds[0]

    # the output dropdown: every mode is [H, W, 1 or 3], goes through the state machine, and shrinks while moving
    states = orbit_camera_states(c2w, 3, fov=math.radians(60), aspect=16 / 9)
    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    try:
        frames = viewer_frames(model, server.scene, states, ["static", "move", "static"], max_res=40)
        assert [f.state for f in frames] == ["high", "low_move", "low_static"]
        assert (frames[0].width, frames[0].height) == (40, round(40 * 9 / 16))
        from nerfstudio.viewer.utils import get_camera

        outputs = model.get_outputs_for_camera(get_camera(states[0], 12, 20))
        assert {"rgb", "depth", "accumulation"} | MODES[method] <= set(outputs)
        assert all(v.shape[:2] == (12, 20) and v.shape[2] in (1, 3) for v in outputs.values()), {
            k: tuple(v.shape) for k, v in outputs.items()}
        assert outputs["depth"].std() > 0  # a render, not a constant
        for key in outputs:
            (frame,) = viewer_frames(model, server.scene, states[:1], ["static"], max_res=16, output_render=key)
            assert frame.width == 16
    finally:
        server.stop()
    if method == "helixsurf":  # the fused MVS cloud is seen from the camera, with confidences in [0, 1]
        assert (outputs["mvs_depth"] > 0).any() and 0 <= outputs["mvs_confidence"].min() <= outputs["mvs_confidence"].max() <= 1
    if method == "romap":  # the 3D mask (part 1, red, at x < 0) shows where the selected Gaussians are
        assert 0 < model.selected.sum() < model.selected.numel() and outputs["mask_3d"].max() > 0.5

    # ns-viewer --load-config starts and serves (ir-nerf: with its estimated and ground-truth frusta drawn)
    viewer = _start_ns_viewer(runs[method] / "config.yml", monkeypatch)
    try:
        assert viewer.pipeline.model.__class__ is model.__class__
        if method == "ir-nerf":
            frusta = viewer.pipeline.model.frusta.handles
            assert len(frusta["estimated"]) == len(frusta["ground_truth"]) == IR_NERF_VIEWS
    finally:
        viewer.viser_server.stop()

    # ns-render camera-path: two frames, rgb beside depth
    if shutil.which("ffmpeg") is not None:
        from nerfstudio.scripts.render import RenderCameraPath

        video = tmp_path / "video.mp4"
        poses = torch.stack([s.c2w for s in states[:2]])
        RenderCameraPath(load_config=runs[method] / "config.yml", output_path=video, rendered_output_names=["rgb", "depth"],
                         camera_path_filename=camera_path_json(poses, tmp_path / "path.json")).main()
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                "stream=nb_read_frames,width", "-of", "json", str(video)], capture_output=True, text=True,
                               check=True)  # fmt: skip
        stream = json.loads(probe.stdout)["streams"][0]
        assert (int(stream["nb_read_frames"]), stream["width"]) == (2, 64)
    else:
        print("ns-render not checked: needs ffmpeg (apt-get install -y ffmpeg)")

    # v3d export mesh: marching cubes of helixsurf's SDF; TSDF of ir-nerf's field at its estimated poses, of romap's splats
    options = MeshExportConfig(resolution=32, min_accumulation=0.1 if method == "ir-nerf" else 0.5, frame="dataparser")
    mesh = mesh_run(loaded, options)  # in the model's frame: inside the scene box
    assert len(mesh.faces) > 20 and mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)
    box = loaded.scene_box
    assert np.all(mesh.vertices >= box[0] - 1e-4) and np.all(mesh.vertices <= box[1] + 1e-4)
    if method == "ir-nerf":  # written in the ground truth's frame: the Sim(3) of estimated onto GT camera centres
        from vision3d.methods.ir_nerf.evaluation import align_poses

        estimated = model.system.estimated_poses().detach().cpu()
        centres = loaded.to_scene_frame(estimated[:, :3, 3].numpy())
        aligned = align_poses(estimated, model.gt_c2w).apply_to_poses(estimated)[:, :3, 3].numpy()
        np.testing.assert_allclose(centres, aligned, atol=1e-4)
        assert not np.allclose(centres, estimated[:, :3, 3].numpy(), atol=1e-2)
