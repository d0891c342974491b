"""nerfstudio's viewer and ns-render on tiny runs of each of our methods, and the viewer in headless Chromium.

- Every output each model returns goes through the viewer's own render state machine (resolution choice,
  colour mapping, JPEG into a viser scene), and the frame shrinks while the camera moves, on CPU as on GPU.
- ``ns-render camera-path`` writes a video for a splat method and for nerfacto (skips without ffmpeg); the
  newer methods are checked in ``test_viewer_methods.py``.
- ``ns-viewer`` in Chromium (skips without chromium, chromedriver or selenium): the first frame arrives, the
  output switches to depth, and both screenshots are real renders that differ. They are kept in the test's
  tmp dir (printed).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import viser
from PIL import Image

from vision3d.data.bundled import bundled_scene_path
from vision3d.export.from_run import load_run
from vision3d.methods import run
from vision3d.viewer.browser import free_port, headless_chromium, wait_for_port
from vision3d.viewer.frame_rate import orbit_camera_states, viewer_frames

sys.path.insert(0, str(Path(__file__).resolve().parent))
from viewer_helpers import camera_path_json  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NS_VIEWER = Path(sys.executable).parent / "ns-viewer"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny runs (a few steps on 8 views of the bundled scene) of each method, by name: their run folders."""
    from vision3d.methods.det_gs.config import det_gs
    from vision3d.methods.nerfacto.config import vision3d_nerfacto
    from vision3d.methods.splat.config import vision3d_splat

    root = tmp_path_factory.mktemp("viewer_runs")
    folders = {}
    for spec, steps in ((vision3d_splat, 3), (det_gs, 3), (vision3d_nerfacto, 1)):
        config = run.configure(spec.config, bundled_scene_path(), root / spec.config.method_name, max_steps=steps,
                               num_train_views=8)
        if spec is vision3d_nerfacto:
            config.pipeline.datamanager.train_num_rays_per_batch = 256
        folders[spec.config.method_name] = run.train(config).base_dir
    return folders


@pytest.fixture(scope="module")
def scene():
    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    yield server.scene
    server.stop()


@pytest.mark.parametrize("method", ["vision3d-splat", "det-gs", "vision3d-nerfacto"])
def test_every_output_renders_in_the_viewer_and_frames_shrink_while_moving(runs, scene, method):
    loaded = load_run(runs[method])
    c2w = loaded.pipeline.datamanager.train_dataparser_outputs.cameras.camera_to_worlds[0]
    # A moving frame is sized for 30 frames/s from the measured rays/s, capped at max_res: the cap must lie above
    # what a CPU reaches (an idle machine rendered a splat's 256-px moving frame at full size), and nerfacto
    # (~2k rays/s on a shared CPU) must stay above nerfstudio's 30-px floor.
    max_res = 64 if method == "vision3d-nerfacto" else 1024
    states = orbit_camera_states(c2w, 5, fov=math.radians(60), aspect=16 / 9)
    frames = viewer_frames(loaded.pipeline.model, scene, states, ["static", "move", "move", "move", "static"],
                           max_res=max_res)
    assert [f.state for f in frames] == ["high", "low_move", "low_move", "low_move", "low_static"]
    assert (frames[0].width, frames[0].height) == (max_res, round(max_res * 9 / 16))
    assert all(f.width * f.height < frames[0].width * frames[0].height for f in frames[1:])  # dropped while moving

    outputs = loaded.pipeline.model.get_outputs_for_camera(_camera(states[0], 18, 32))
    assert {"rgb", "depth", "accumulation"} <= set(outputs)
    if method == "det-gs":  # the edge mask that drives L_edge
        assert "edge_mask" in outputs
    assert outputs["rgb"].std() > 1e-3 and outputs["depth"].std() > 0  # a render, not a constant (1-step nerfacto is dim)
    for key in outputs:  # every entry of the output dropdown colour-maps and reaches the scene
        (frame,) = viewer_frames(loaded.pipeline.model, scene, states[:1], ["static"], max_res=32, output_render=key)
        assert frame.width == 32


def _camera(state, height: int, width: int):
    from nerfstudio.viewer.utils import get_camera

    return get_camera(state, height, width)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ns-render needs ffmpeg (apt-get install -y ffmpeg)")
@pytest.mark.parametrize("method", ["vision3d-splat", "vision3d-nerfacto"])  # det-gs renders through vision3d-splat's code
def test_ns_render_camera_path_video(runs, method, tmp_path):
    from nerfstudio.scripts.render import RenderCameraPath

    config = runs[method] / "config.yml"
    loaded = load_run(runs[method])
    cameras = loaded.pipeline.datamanager.train_dataparser_outputs.cameras.camera_to_worlds[:3]
    video = tmp_path / "video.mp4"
    RenderCameraPath(load_config=config, camera_path_filename=camera_path_json(cameras, tmp_path / "path.json"),
                     output_path=video, rendered_output_names=["rgb", "depth"]).main()
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames,width,height", "-of", "json", str(video)],
                           capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (int(stream["nb_read_frames"]), stream["width"], stream["height"]) == (3, 64, 24)  # rgb beside depth
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    first = np.frombuffer(raw, np.uint8).reshape(24, 64, 3).astype(float)
    assert first.std() > 5 and np.abs(first[:, :32] - first[:, 32:]).mean() > 10  # an image, and rgb differs from depth


def _screenshot(driver) -> np.ndarray:
    """The viewer's render area (the canvas left of the control panel) as RGB [H, W, 3]."""
    from selenium.webdriver.common.by import By

    image = np.asarray(Image.open(io.BytesIO(driver.find_element(By.TAG_NAME, "canvas").screenshot_as_png)).convert("RGB"))
    return image[:, : int(image.shape[1] * 0.6)]


def _resolution(driver) -> str | None:
    from selenium.webdriver.common.by import By

    match = re.search(r"Resolution: (\d+x\d+)px", driver.find_element(By.TAG_NAME, "body").text)
    return match and match.group(1)


def test_ns_viewer_in_headless_chromium(runs, tmp_path_factory):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    selenium = pytest.importorskip("selenium", reason="needs selenium (the dev extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    artefacts = tmp_path_factory.mktemp("viewer_screenshots")
    print(f"viewer screenshots in {artefacts} (selenium {selenium.__version__})")
    port = free_port()
    log = (artefacts / "ns-viewer.log").open("w")
    viewer = subprocess.Popen([str(NS_VIEWER), "--load-config", str(runs["det-gs"] / "config.yml"),
                               "--viewer.websocket-port", str(port), "--viewer.websocket-host", "127.0.0.1"],
                              stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    driver = None
    try:
        wait_for_port(port, viewer, timeout_s=240)
        assert viewer.poll() is None, f"ns-viewer exited: {(artefacts / 'ns-viewer.log').read_text()[-2000:]}"
        driver = headless_chromium(CHROMIUM, CHROMEDRIVER)
        driver.get(f"http://127.0.0.1:{port}")
        high = "512x"  # the first static frame at nerfstudio's default "Max res"
        WebDriverWait(driver, 240, 0.5).until(lambda d: (_resolution(d) or "").startswith(high))
        rgb = _screenshot(driver)
        Image.fromarray(rgb).save(artefacts / "rgb.png")

        label = driver.find_element(By.XPATH, "//label[text()='Output type']")
        dropdown = driver.find_element(By.ID, label.get_attribute("for"))
        dropdown.click()
        options_shown = WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.XPATH, "//*[@role='option']"))
        names = [o.text for o in options_shown]
        assert {"rgb", "depth"} <= set(names) and "edge_mask" in names, names
        next(o for o in options_shown if o.text == "depth").click()
        # the switch re-renders: wait for a full-size frame that is no longer the RGB one
        WebDriverWait(driver, 240, 0.5).until(
            lambda d: (_resolution(d) or "").startswith(high) and np.abs(_screenshot(d).astype(float) - rgb).mean() > 10)
        time.sleep(1.0)
        depth = _screenshot(driver)
        Image.fromarray(depth).save(artefacts / "depth.png")
        assert dropdown.get_attribute("value") == "depth"
    finally:
        if driver is not None:
            driver.quit()
        viewer.terminate()
        viewer.wait(30)
        log.close()
    for image in (rgb, depth):
        assert image.astype(float).std() > 8, "a blank screenshot"
    assert np.abs(rgb.astype(float) - depth.astype(float)).mean() > 10
    # depth is colour-mapped (turbo): far more saturated than the dim RGB of a 3-step run
    saturation = lambda im: (im.max(-1).astype(float) - im.min(-1)).mean()  # noqa: E731
    assert saturation(depth) > saturation(rgb) + 20


def _broken_copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of a run whose config.yml records the copy's own place (nerfstudio reads checkpoints from there)."""
    copy = tmp_path / "outputs" / run_dir.relative_to(run_dir.parents[2])
    shutil.copytree(run_dir, copy)
    config = copy / "config.yml"
    parts = "".join(f"- {part}\n" for part in (tmp_path / "outputs").parts)
    text = re.sub(r"output_dir: !!python/object/apply:pathlib.PosixPath\n(- .*\n)+",
                  f"output_dir: !!python/object/apply:pathlib.PosixPath\n{parts}", config.read_text())
    config.write_text(text)
    return copy


def test_saved_configs_check_version_and_checkpoint_before_nerfstudio_loads_them(runs, tmp_path, monkeypatch):
    import yaml

    from vision3d.errors import CheckpointError, CheckpointNotFoundError
    from vision3d.export.from_run import RunError

    copy = _broken_copy(runs["det-gs"], tmp_path)
    config_file = copy / "config.yml"
    monkeypatch.setattr(sys, "argv", ["ns-viewer", "--load-config", str(config_file)])
    read = lambda: yaml.load(config_file.read_text(), Loader=yaml.Loader)  # noqa: E731  (as eval_setup reads it)
    assert read().get_checkpoint_dir() == copy / "nerfstudio_models"  # a whole run passes

    (checkpoint,) = (copy / "nerfstudio_models").glob("step-*.ckpt")
    shutil.copy(checkpoint, checkpoint.with_suffix(".whole"))
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt checkpoint") as err:
        read().get_checkpoint_dir()
    assert str(err.value).startswith(str(checkpoint)) and "\n" not in str(err.value)
    config = read()
    config.set_timestamp()  # ns-train --load-config: a new run, nothing to check yet
    config.get_checkpoint_dir()

    checkpoint.unlink()
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint"):
        read().get_checkpoint_dir()
    shutil.copy(checkpoint.with_suffix(".whole"), checkpoint)
    text = config_file.read_text()
    config_file.write_text(re.sub(r"viewer_min_refresh_s: .*\n", "", text))  # saved before the field existed
    config = read()
    assert config.get_checkpoint_dir() == copy / "nerfstudio_models" and config.viewer_min_refresh_s == 0.5
    config_file.write_text(text.replace("load_scheduler: true\n", "load_scheduler: true\nsteps_per_coffee: 3\n"))
    with pytest.raises(RunError, match="another version .*steps_per_coffee unknown") as err:
        read().get_checkpoint_dir()
    assert str(err.value).startswith(str(config_file))


def test_ns_commands_print_our_errors_as_one_line(monkeypatch, capsys):
    from vision3d.errors import CheckpointError, one_line_errors_in_our_commands

    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: seen.append(exc[0]))
    monkeypatch.setattr(sys, "argv", ["pytest"])
    one_line_errors_in_our_commands()  # not an ns-* command: the hook stays as it was
    assert not getattr(sys.excepthook, "vision3d_one_line", False)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ns-viewer", "--load-config", "x/config.yml"])
    one_line_errors_in_our_commands()
    assert sys.excepthook.vision3d_one_line
    sys.excepthook(CheckpointError, CheckpointError("x/step-1.ckpt: corrupt checkpoint"), None)
    assert capsys.readouterr().err == "error: x/step-1.ckpt: corrupt checkpoint\n"
    sys.excepthook(KeyError, KeyError("other"), None)  # anything else goes to the previous hook
    assert seen == [KeyError]
