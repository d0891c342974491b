"""Import ViSP's ``Castle-simu`` sequence (Debian ``visp-images-data``) as a nerfstudio scene.

Castle-simu is 40 rendered 640×480 frames of a castle model with exact poses, depth and intrinsics
(``/usr/share/visp-images-data/ViSP-images/mbt-depth/Castle-simu``, Inria, GPL-2). It is fetched with
``apt-get download`` (no install; :mod:`vision3d.data.apt_data`) and converted to:

* ``images/frame_00001.png``: the 8-bit grey images, written as RGB PNGs (nerfstudio expects 3 channels).
* ``transform_matrix``: the files give ``cMo`` (object/world → colour camera, OpenCV axes: x right,
  y down, z forward). We write ``opencv_to_opengl(inv(cMo))``: camera-to-world in OpenGL axes.
* intrinsics: ``px = py = 700``, ``u0 = 320``, ``v0 = 240`` from ``Config/chateau.xml``, no distortion.
  ViSP puts pixel centres at integer coordinates while ``transforms.json`` (like nerfstudio's ray
  generator) puts them at +0.5, which would suggest ``cx = u0 + 0.5``. The renderer that made the
  frames decides, so we measured: the depth of 8 neighbouring frame pairs reprojects most consistently
  with ``cx = u0, cy = v0`` (mean clipped relative error 0.0646 % against 0.0662 % at +0.5 and 0.0666 %
  at -0.5), so we write ``cx = u0``, ``cy = v0``. The difference is below a pixel's tenth in effect.
* ``depths/frame_00001.png``: planar z-depth in millimetres (16-bit, 0 = unknown) **aligned to the colour
  camera**. The depth maps (``Depth/Depth_0001.bin``: ``uint32 h, uint32 w`` then ``uint16[h*w]``,
  metres = value × 0.000030518) come from a depth camera with the same intrinsics displaced by
  ``depth_M_color = [I | (-0.05, 0, 0)]`` (given in ViSP's ``testGenericTracker.cpp``, not in a data
  file): a point ``X_c`` in the colour frame is ``X_d = X_c + t`` in the depth frame. We back-project
  every depth pixel (at 2×2 sub-pixel positions, so the ~58 px shift leaves no cracks), move it into the
  colour frame with ``X_c = X_d - t``, project it with the colour intrinsics and keep the nearest point
  per pixel (z-buffer). Colour pixels that no depth sample reaches (parts of the scene the depth camera
  does not see, image borders) stay 0 = unknown. Depth is rounded to 1 mm. The sign of the offset is
  checked: with it, depth reprojected between frames agrees to 0.005–0.08 % (median); with the opposite
  sign 2–15 %, without the warp 1–10 %.
* ``mesh_file_path``: none (the CAD model ``Models/chateau.wrl`` is VRML, recorded under ``source``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from vision3d.errors import Vision3DError
from vision3d.geometry.se3 import opencv_to_opengl


class VispFormatError(Vision3DError, ValueError):
    """A Castle-simu file is missing or not in the expected format; the message names it."""


VISP_PACKAGE = "visp-images-data"
CASTLE_DIR = "/usr/share/visp-images-data/ViSP-images/mbt-depth/Castle-simu"
DEPTH_SCALE = 0.000030518  # metres per unit of the .bin depth maps
DEPTH_T_COLOR = np.array([-0.05, 0.0, 0.0])  # translation of depth_M_color (metres)


def castle_simu_dir() -> Path:
    """The Castle-simu folder, fetched from apt on first use (raises ``AptUnavailableError`` offline)."""
    from vision3d.data.apt_data import extract_from_deb

    return extract_from_deb(VISP_PACKAGE, CASTLE_DIR)


def read_intrinsics(xml_path: Path) -> tuple[float, float, float, float]:
    """(px, py, u0, v0) from a ViSP tracker config's ``<camera>`` block."""
    text = Path(xml_path).read_text()
    values = []
    for key in ("px", "py", "u0", "v0"):
        m = re.search(rf"<camera>.*?<{key}>\s*([-0-9.eE+]+)\s*</{key}>", text, re.S)
        if m is None:
            raise VispFormatError(f"{xml_path}: no <camera><{key}> entry")
        values.append(float(m.group(1)))
    return tuple(values)


def read_depth_bin(path: Path) -> np.ndarray:
    """Depth [H, W] in metres (0 = unknown) from ViSP's ``.bin`` format."""
    raw = Path(path).read_bytes()
    h, w = np.frombuffer(raw[:8], "<u4")
    depth = np.frombuffer(raw[8:], "<u2")
    if depth.size != h * w:
        raise VispFormatError(f"{path}: header says {h}x{w}, file holds {depth.size} values")
    return depth.reshape(int(h), int(w)).astype(np.float64) * DEPTH_SCALE


def depth_to_color(
    depth: np.ndarray,  # [H, W] metres in the depth camera, 0 = unknown
    K_depth: np.ndarray,  # noqa: N803  [3, 3], ViSP pixel convention (centres at integers)
    K_color: np.ndarray,  # noqa: N803  [3, 3], same convention
    t_depth_from_color: np.ndarray = DEPTH_T_COLOR,  # X_d = X_c + t
    supersample: int = 2,
) -> np.ndarray:
    """Depth [H, W] seen from the colour camera (z-buffered forward warp, 0 where nothing lands)."""
    h, w = depth.shape
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    v, u = np.nonzero(depth > 0)
    z = depth[v, u]
    out = np.full((h, w), np.inf)
    for dv in offsets:
        for du in offsets:
            x = (u + du - K_depth[0, 2]) / K_depth[0, 0] * z
            y = (v + dv - K_depth[1, 2]) / K_depth[1, 1] * z
            pts = np.stack([x, y, z], -1) - t_depth_from_color
            zc = pts[:, 2]
            uc = np.round(K_color[0, 0] * pts[:, 0] / zc + K_color[0, 2]).astype(int)
            vc = np.round(K_color[1, 1] * pts[:, 1] / zc + K_color[1, 2]).astype(int)
            ok = (zc > 0) & (uc >= 0) & (uc < w) & (vc >= 0) & (vc < h)
            np.minimum.at(out, (vc[ok], uc[ok]), zc[ok])
    return np.where(np.isfinite(out), out, 0.0)


def import_castle_simu(out: str | Path, source: str | Path | None = None, frames: list[int] | None = None) -> Path:
    """Write Castle-simu as a nerfstudio scene into ``out``; returns ``out``.

    ``source`` is a Castle-simu folder (default: fetched with apt); ``frames`` 1-based frame numbers
    (default all 40).
    """
    from PIL import Image

    src = Path(source) if source is not None else castle_simu_dir()
    if not (src / "Config" / "chateau.xml").is_file():
        raise VispFormatError(f"{src}: no Config/chateau.xml (not a Castle-simu folder?)")
    out = Path(out)
    px, py, u0, v0 = read_intrinsics(src / "Config" / "chateau.xml")
    K = np.array([[px, 0.0, u0], [0.0, py, v0], [0.0, 0.0, 1.0]])  # noqa: N806
    depth_xml = src / "Config" / "chateau_depth.xml"
    K_depth = K  # noqa: N806
    if depth_xml.is_file():
        dpx, dpy, du0, dv0 = read_intrinsics(depth_xml)
        K_depth = np.array([[dpx, 0.0, du0], [0.0, dpy, dv0], [0.0, 0.0, 1.0]])  # noqa: N806
    numbers = frames or sorted(int(p.stem.split("_")[1]) for p in (src / "Images").glob("Image_*.pgm"))
    if not numbers:
        raise VispFormatError(f"{src}: no Images/Image_*.pgm (not a Castle-simu folder?)")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depths").mkdir(parents=True, exist_ok=True)
    records = []
    h = w = None
    for k, i in enumerate(numbers, start=1):
        name = f"frame_{k:05d}"
        grey = np.array(Image.open(src / "Images" / f"Image_{i:04d}.pgm"))
        h, w = grey.shape[:2]
        Image.fromarray(np.repeat(grey[..., None], 3, -1) if grey.ndim == 2 else grey).save(
            out / "images" / f"{name}.png")
        depth = depth_to_color(read_depth_bin(src / "Depth" / f"Depth_{i:04d}.bin"), K_depth, K)
        depth_mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
        Image.fromarray(depth_mm).save(out / "depths" / f"{name}.png")
        c_m_o = np.loadtxt(src / "CameraPose" / f"Camera_{i:03d}.txt")
        c2w = opencv_to_opengl(np.linalg.inv(c_m_o))
        records.append({"file_path": f"images/{name}.png", "transform_matrix": c2w.tolist(),
                        "depth_file_path": f"depths/{name}.png", "visp_frame": i})
    meta = {
        "camera_model": "OPENCV",
        "fl_x": px, "fl_y": py, "cx": u0, "cy": v0, "w": int(w), "h": int(h),
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "depth_unit_scale_factor": 1e-3,
        "frames": records,
        "source": {
            "name": "ViSP Castle-simu", "package": VISP_PACKAGE, "path": CASTLE_DIR,
            "cad_model": f"{CASTLE_DIR}/Models/chateau.wrl",
            "origin": "ViSP (Inria) model-based tracker test data, rendered frames with ground-truth poses",
            "licence": "GPL-2 (Debian visp-images-data)",
            "depth_alignment": "depth camera depth_M_color = [I | (-0.05, 0, 0)] warped into the colour camera",
        },
    }
    (out / "transforms.json").write_text(json.dumps(meta, indent=1))
    return out
