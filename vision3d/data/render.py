"""Render real scenes from real 3D models with Blender: the driver behind ``v3d data render``.

Runs Debian's Blender headless on our bpy script (:mod:`vision3d.data.blender_script`), reads the
multilayer EXRs it writes, and writes a scene in nerfstudio's ``transforms.json`` format::

    OUT/transforms.json
    OUT/images/frame_00001.png    RGB, 8-bit sRGB (Blender's "Standard" view transform), HDRI background
    OUT/depths/frame_00001.png    planar z-depth, 16-bit PNG in millimetres (nerfstudio's convention,
                                  depth_unit_scale_factor 1e-3); 0 = nothing hit (background)
    OUT/normals/frame_00001.png   8-bit RGB PNG = (n + 1) / 2 * 255 with n the unit surface normal in
                                  *camera* coordinates, OpenGL axes (x right, y up, z towards the viewer),
                                  the convention of rendered/monocular normal priors; (0, 0, 0) = no hit
    OUT/flows/frame_00001.npy     float32 [H, W, 2], forward optical flow (dx, dy) in pixels from this
                                  view to the next one in ``frames`` (x right, y down), from Blender's
                                  Vector pass with motion blur off. On a closed orbit the last view flows
                                  to the first; on an open path (forward, walk) the last view has none
                                  (unless ``view_range`` stops before the path's end).
                                  Blender's Vector pass is ~0 on the background, which is wrong for an
                                  environment at infinity; there (depth 0) we write the exact flow of
                                  infinitely far points, which only the camera rotation moves. Like
                                  every pass, the flow is averaged over the pixel's samples (Cycles'
                                  1.5 px filter), so it carries a little noise that falls with spp:
                                  against flow from depth and poses, median error 0.01 px at 32 spp
                                  and 15° steps, ~0.1 px at 4 spp and 60° steps.
    OUT/part_ids/frame_00001.png  with ``parts``: 16-bit part id per pixel from Blender's object-index pass
                                  (1..P, 0 = background, ground, room), and ``part_ids/parts.json`` the
                                  part names (RoMaP's 2D part masks, :mod:`vision3d.methods.romap.masks`)
    OUT/mesh.ply                  ground-truth mesh of everything rendered (model + ground or room),
                                  world coordinates; OUT/object.ply: the model alone
    OUT/sparse_pc.ply             SfM-like seed points (``ply_file_path``, as ``ns-process-data`` names
                                  COLMAP's): a few thousand mesh samples that two views see, coloured
                                  from the images (:mod:`vision3d.data.sparse_points`); splatfacto
                                  starts from them as from COLMAP's points

``transforms.json`` holds ``fl_x, fl_y, cx, cy, w, h`` and ``camera_model: OPENCV`` (no distortion),
``frames[]`` with ``file_path``, ``transform_matrix`` (camera-to-world, OpenGL/Blender camera axes:
looks down -Z, +Y up; world +Z up), ``depth_file_path``, ``normal_file_path``, ``flow_file_path``, and at
top level ``mesh_file_path``, ``object_mesh_file_path``, ``ply_file_path``, ``sparse_points`` (how they
were drawn), ``source`` (model file, package, origin, licence) and ``render`` (engine, spp, HDRI, camera
path, Blender version, the cache key).

Rendering the same arguments into the same folder again returns the cached scene at once. The seed points
are derived from the written files, not rendered, so they stay out of the cache key: a cached scene
without them (or with another ``sparse_points`` count) gets them written without running Blender.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vision3d.errors import Vision3DError

SCRIPT = Path(__file__).with_name("blender_script.py")
HDRI_DIR = Path("/usr/share/blender/datafiles/studiolights/world")
CAMERA_PATHS = ("orbit", "forward", "walk")
PHOTO_TEXTURES = ("brick", "grass", "gravel", "camera", "coffee", "chelsea", "rocket", "astronaut")
BLENDER_INSTALL_HINT = "apt-get install -y blender python3-numpy"
FORMAT_VERSION = 2  # bump when the files written change, so cached scenes are rendered again
NO_HIT_DEPTH = 1e3  # metres; Blender writes ~1e10 where a ray hits nothing


class RenderError(Vision3DError, RuntimeError):
    """Blender or one of the render's inputs failed; the message says what and shows Blender's last lines."""


class BlenderNotFoundError(RenderError):
    """No ``blender`` executable; install Debian's with ``apt-get install -y blender python3-numpy``."""


@dataclass
class RenderConfig:
    """What to render. Every field goes into the cache key.

    ``up`` is the model file's up axis for formats Blender imports without axis conversion (off, ply, stl);
    None takes the registry's value for a known mesh and "y" otherwise, because scanned models in these
    formats (Stanford, CGAL) are mostly Y-up. ``fov_deg`` None means 40° for orbit/forward, 70° for walk.
    ``mesh_max_faces`` decimates the ground-truth model mesh written beside the scene (renders always use
    the full mesh).
    """

    path: str = "orbit"
    views: int = 24
    width: int = 128
    height: int = 128
    spp: int = 32
    hdri: str = "forest"
    ground: str = "brick"
    texture: str = "gravel"
    walls: str = "brick"
    seed: int = 0
    fov_deg: float | None = None
    up: str | None = None
    hdri_strength: float = 1.0
    mesh_max_faces: int | None = None
    view_range: tuple[int, int] | None = None
    """Render only views ``first .. stop − 1`` of the ``views``-view path (None: all). The path and so the
    motion between views are those of the full path: a short stretch of a dense path can be rendered at many
    samples per pixel (an event simulator needs that; see :func:`vision3d.events.simulator.simulate_rendered_sequence`).
    Every rendered view has a flow when the path goes on after ``stop``."""
    parts: str | None = None
    """Write per-pixel part ids: ``models`` (one part per model file), ``objects`` (one per mesh object of
    the file), ``slabs:K`` (the model cut into K slabs along its longest axis); None: none."""
    extra_models: tuple[str, ...] = ()
    """More model files (or known mesh names) set in a row beside the first, e.g. a scene of several models."""


def find_blender() -> str:
    """Path of the blender executable (``$VISION3D_BLENDER`` or ``blender`` on PATH)."""
    exe = os.environ.get("VISION3D_BLENDER") or shutil.which("blender")
    if not exe or not Path(exe).exists():
        raise BlenderNotFoundError(f"blender is not installed; install Debian's with `{BLENDER_INSTALL_HINT}`")
    return exe


def blender_version(exe: str | None = None) -> str:
    out = subprocess.run([exe or find_blender(), "--version"], capture_output=True, text=True, timeout=60)
    first = (out.stdout.strip().splitlines() or ["unknown"])[0]
    return first.replace("Blender", "").strip()


def resolve_model(model: str | Path) -> tuple[Path, dict, str | None]:
    """(file, source record, registry up axis) for a file path or a known mesh name (see ``apt_data.MESHES``)."""
    from vision3d.data import apt_data

    if isinstance(model, str) and model in apt_data.MESHES:
        src = apt_data.MESHES[model]
        return apt_data.fetch_mesh(model), src.describe(), src.up
    path = Path(model).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(apt_data.MESHES))
        raise RenderError(f"model file not found: {path} (give a path to an off/obj/ply/stl/glb/gltf/dae file, "
                          f"or a known mesh name: {known})")
    try:
        with open(path, "rb") as f:
            f.read(16)
    except OSError as exc:
        raise RenderError(f"model file is unreadable: {path}: {exc}") from exc
    src = apt_data.mesh_source_for(path)
    if src is not None:
        return path, src.describe(), src.up
    return path.resolve(), {"file": str(path.resolve()), "package": _dpkg_owner(path),
                            "licence": "unknown (the user's own file)"}, None


def _dpkg_owner(path: Path) -> str | None:
    if shutil.which("dpkg") is None:
        return None
    out = subprocess.run(["dpkg", "-S", str(path.resolve())], capture_output=True, text=True)
    return out.stdout.split(":", 1)[0] if out.returncode == 0 else None


def hdri_file(hdri: str) -> Path:
    """Where the HDRI ``hdri`` (a name from Debian's blender-data, or an .exr/.hdr path) is; not checked."""
    path = Path(hdri).expanduser()
    if path.suffix.lower() in (".exr", ".hdr") and path.is_file():
        return path.resolve()
    return HDRI_DIR / f"{hdri}.exr"


def resolve_hdri(hdri: str) -> Path:
    """:func:`hdri_file`, which must exist."""
    path = hdri_file(hdri)
    if not path.is_file():
        have = sorted(p.stem for p in HDRI_DIR.glob("*.exr"))
        raise RenderError(f"HDRI {hdri!r} not found (looked for {path}); "
                          + (f"available: {', '.join(have)}" if have else "install Debian's blender-data"))
    return path


def resolve_texture(name: str | None) -> Path | None:
    """A real photo for a texture: a name from scikit-image's bundled images, a PNG/JPG path, or none."""
    if name is None or name.lower() == "none":
        return None
    path = Path(name).expanduser()
    if path.suffix and path.is_file():
        return path.resolve()
    import skimage.data

    path = Path(skimage.data.__file__).parent / f"{name}.png"
    if not path.is_file():
        path = path.with_suffix(".jpg")
    if not path.is_file():
        raise RenderError(f"texture {name!r} is neither a file nor one of scikit-image's photos "
                          f"({', '.join(PHOTO_TEXTURES)})")
    return path


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _code_hash(path: Path) -> str:
    """Hash of a Python file's code, blind to comments and docstrings (editing those keeps the cache)."""
    import ast

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def render_scene(
    model: str | Path,
    out: str | Path,
    config: RenderConfig | None = None,
    *,
    progress: bool = True,
    force: bool = False,
    keep_exr: bool = False,
    threads: int | None = None,
    sparse_points: int = 4000,
    **overrides,
) -> Path:
    """Render ``model`` (a file or a known mesh name) into the scene folder ``out``; returns ``out``.

    ``overrides`` set :class:`RenderConfig` fields. A folder already rendered with the same model file,
    config and script is returned as is unless ``force``. ``sparse_points``: how many SfM-like seed points
    to write (``sparse_pc.ply``; 0: none).
    """
    cfg = RenderConfig(**{**asdict(config or RenderConfig()), **overrides})
    if cfg.path not in CAMERA_PATHS:
        raise RenderError(f"unknown camera path {cfg.path!r}; choose one of {', '.join(CAMERA_PATHS)}")
    if cfg.views < 2:
        raise RenderError("render at least 2 views")
    if cfg.width < 1 or cfg.height < 1:
        raise RenderError(f"resolution must be positive, got {cfg.width}×{cfg.height}")
    if cfg.spp < 1:
        raise RenderError(f"samples per pixel must be at least 1, got {cfg.spp}")
    if cfg.fov_deg is not None and not 0 < cfg.fov_deg < 180:
        raise RenderError(f"horizontal field of view must be between 0° and 180°, got {cfg.fov_deg}°")
    if not cfg.hdri_strength >= 0:
        raise RenderError(f"HDRI strength must be non-negative, got {cfg.hdri_strength}")
    if cfg.view_range is not None:
        first, stop = cfg.view_range
        if not 0 <= first < stop <= cfg.views:
            raise RenderError(f"view_range {cfg.view_range} must satisfy 0 <= first < stop <= views ({cfg.views})")
        cfg.view_range = (int(first), int(stop))
    if cfg.parts is not None and cfg.parts not in ("models", "objects") and not (
        cfg.parts.startswith("slabs:") and cfg.parts[6:].isdigit() and int(cfg.parts[6:]) >= 2
    ):
        raise RenderError(f"parts must be models, objects or slabs:K with K >= 2, got {cfg.parts!r}")
    if cfg.up not in (None, "y", "z"):
        raise RenderError(f"up axis must be 'y' or 'z', got {cfg.up!r}")
    # Checks in the order a user needs them: the arguments (a model file of theirs must exist), the output
    # folder, Blender, then the assets (a known mesh fetched with apt, the HDRI, the textures). A folder that
    # holds our render with the same key is returned without Blender.
    from vision3d.data.apt_data import MESHES

    known_mesh = isinstance(model, str) and model in MESHES
    if not known_mesh:
        model_path, source, registry_up = resolve_model(model)
    out = Path(out).expanduser()
    transforms_path = out / "transforms.json"
    old: dict = {}
    if transforms_path.is_file():
        try:
            old = json.loads(transforms_path.read_text())
        except (OSError, ValueError):
            old = {}
    ours = isinstance(old.get("render"), dict) and "cache_key" in old["render"]
    if not ours and not force and out.is_dir() and any(not p.name.startswith(".render-") for p in out.iterdir()):
        raise RenderError(f"{out} holds files that `v3d data render` did not write; render into an empty or new "
                          "folder (or pass --force to overwrite its images/, depths/, normals/, flows/)")
    exe = find_blender() if force or not ours else None  # nothing cached here: Blender must run
    if known_mesh:
        model_path, source, registry_up = resolve_model(model)
    up = cfg.up or registry_up or "y"

    extra_paths = [resolve_model(m)[0] for m in cfg.extra_models]
    key_config = asdict(cfg)
    for name, unset in (("view_range", None), ("parts", None), ("extra_models", ())):
        if getattr(cfg, name) == unset:  # unset: left out of the key, as before the field existed
            del key_config[name]
    if extra_paths:
        key_config["extra_models"] = [_file_hash(p) for p in extra_paths]
    key_data = {"config": key_config, "model": _file_hash(model_path), "script": _code_hash(SCRIPT),
                "format": FORMAT_VERSION, "hdri": str(hdri_file(cfg.hdri))}
    cache_key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    if ours and old["render"]["cache_key"] == cache_key and not force:
        if sparse_points > 0 and old.get("sparse_points", {}).get("requested") != sparse_points:
            _add_sparse_points(out, sparse_points)
        return out

    exe = exe or find_blender()
    hdri = resolve_hdri(cfg.hdri)
    ground, texture, walls = (resolve_texture(t) for t in (cfg.ground, cfg.texture, cfg.walls))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".render-", dir=out))
    try:
        bl_cfg = {
            "model": str(model_path), "up": up, "out_dir": str(work), "path": cfg.path, "views": cfg.views,
            "width": cfg.width, "height": cfg.height, "spp": cfg.spp, "hdri": str(hdri),
            "hdri_strength": cfg.hdri_strength, "ground_texture": _str(ground), "ground": cfg.ground != "none",
            "model_texture": _str(texture), "wall_texture": _str(walls), "seed": cfg.seed,
            "threads": threads or os.cpu_count() or 2, "mesh_max_faces": cfg.mesh_max_faces,
        }
        if cfg.fov_deg is not None:
            bl_cfg["fov_deg"] = cfg.fov_deg
        if cfg.view_range is not None:
            bl_cfg["view_range"] = list(cfg.view_range)
        if cfg.parts is not None:
            bl_cfg["parts"] = cfg.parts
        if extra_paths:
            bl_cfg["extra_models"] = [str(p) for p in extra_paths]
        (work / "config.json").write_text(json.dumps(bl_cfg, indent=1))
        start = time.time()
        n_render = cfg.view_range[1] - cfg.view_range[0] if cfg.view_range else cfg.views
        _run_blender(exe, work / "config.json", n_render, progress, label=f"{model_path.name} ({cfg.path})")
        seconds = time.time() - start
        cams = json.loads((work / "cameras.json").read_text())
        for sub in ("images", "depths", "normals", "flows", "exr", "part_ids"):
            shutil.rmtree(out / sub, ignore_errors=True)
        meta = _write_scene(work, out, cams, cfg)
        meta["source"] = source
        meta["render"] = {
            "engine": "blender cycles (CPU)", "blender_version": cams["blender_version"], "spp": cfg.spp,
            "hdri": {"name": hdri.stem, "file": str(hdri), "package": "blender-data",
                     "licence": "CC0 (Greg Zaal, HDRI Haven / Poly Haven)"},
            "camera_path": cfg.path, "views": cfg.views, "view_range": cfg.view_range, "resolution": [cfg.width, cfg.height],
            "fov_deg": cams.get("fov_deg"), "seed": cfg.seed, "up_axis": up,
            "textures": {"ground": _texture_record(ground), "model": _texture_record(texture),
                         "walls": _texture_record(walls) if cfg.path == "walk" else None},
            "model_to_world": cams["model_to_world"], "model_bounds": cams["model_bounds"],
            "flow": "forward flow to the next frame, pixels, from the Vector pass as (-Vector.Z, +Vector.W); "
                    "background: rotation-only flow of points at infinity",
            "closed_path": cams["closed_path"], "seconds": round(seconds, 1), "cache_key": cache_key,
        }
        if keep_exr:
            shutil.move(str(work / "exr"), str(out / "exr"))
        transforms_path.write_text(json.dumps(meta, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if sparse_points > 0:
        _add_sparse_points(out, sparse_points)
    return out


def _add_sparse_points(out: Path, count: int) -> None:
    from vision3d.data.sparse_points import add_sparse_points

    add_sparse_points(out, num_points=count)


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _texture_record(path: Path | None) -> dict | None:
    if path is None:
        return None
    if "skimage" in path.parts:
        return {"file": path.name, "package": "scikit-image (PyPI)", "licence": "see skimage/data/README.txt"}
    return {"file": str(path)}


def _run_blender(exe: str, config: Path, views: int, progress: bool, label: str) -> None:
    cmd = [exe, "-b", "--factory-startup", "--python", str(SCRIPT), "--", "--config", str(config)]
    tail: collections.deque[str] = collections.deque(maxlen=40)
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    except OSError as exc:
        raise BlenderNotFoundError(f"could not start {exe}: {exc}; install with `{BLENDER_INSTALL_HINT}`") from exc

    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("rendering {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn())
        task = bar.add_task(label, total=views)
        bar.start()
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if not line.startswith("Fra:"):  # keep Blender's per-sample chatter out of the error tail
                tail.append(line)
            if line.startswith("V3D_PROGRESS") and bar is not None:
                bar.update(task, completed=int(line.split()[1]))
        proc.wait()
    finally:
        if bar is not None:
            bar.stop()
    errors = [t for t in tail if t.startswith("V3D_ERROR")]
    if proc.returncode != 0 or errors:
        last = "\n".join(list(tail)[-15:])
        what = errors[-1].removeprefix("V3D_ERROR ") if errors else f"exit status {proc.returncode}"
        raise RenderError(f"Blender failed: {what}\n--- last lines of Blender's log ---\n{last}")


# ------------------------------------------------------------------------------------------ EXR → files


def read_exr(path: Path) -> dict[str, np.ndarray]:
    """Channels of a Blender multilayer EXR by name, e.g. ``ViewLayer.Depth.Z`` -> [H, W] float32."""
    import OpenEXR

    with OpenEXR.File(str(path)) as f:
        return {name: np.array(ch.pixels) for name, ch in f.parts[0].channels.items()}


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _channel(ch: dict[str, np.ndarray], layer: str, names: str) -> np.ndarray:
    """[H, W, len(names)] from ``ViewLayer.<layer>.<X>`` channels or a grouped ``ViewLayer.<layer>``."""
    grouped = ch.get(f"ViewLayer.{layer}")
    if grouped is not None and grouped.ndim == 3:
        return grouped[..., : len(names)]
    return np.stack([ch[f"ViewLayer.{layer}.{c}"] for c in names], -1)


def _write_scene(work: Path, out: Path, cams: dict, cfg: RenderConfig) -> dict:
    import trimesh
    from PIL import Image

    from vision3d.data.consistency import flow_at_infinity

    for sub in ("images", "depths", "normals", "flows"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    n = len(cams["frames"])
    indices = cams.get("view_indices", list(range(n)))  # path index of each rendered view
    last_has_next = cams.get("last_has_next", cams["closed_path"])
    frames = []
    for i, c2w in enumerate(cams["frames"]):
        name = f"frame_{indices[i] + 1:05d}"
        ch = read_exr(work / "exr" / f"{name}.exr")
        rgb = _channel(ch, "Combined", "RGBA")[..., :3]
        Image.fromarray(np.round(linear_to_srgb(rgb) * 255).astype(np.uint8)).save(out / "images" / f"{name}.png")

        depth = ch["ViewLayer.Depth.Z"].astype(np.float64)
        hit = np.isfinite(depth) & (depth < NO_HIT_DEPTH)
        depth_mm = np.where(hit, np.round(depth * 1000.0), 0.0)
        depth_mm[depth_mm > 65535] = 0  # beyond 65.5 m does not fit: marked unknown
        Image.fromarray(depth_mm.astype(np.uint16)).save(out / "depths" / f"{name}.png")

        normal_world = _channel(ch, "Normal", "XYZ").astype(np.float64)
        rot = np.asarray(c2w, dtype=np.float64)[:3, :3]
        normal_cam = normal_world @ rot  # R^T n for each pixel
        norm = np.linalg.norm(normal_cam, axis=-1, keepdims=True)
        ok = hit[..., None] & (norm > 1e-6)
        normal_png = np.where(ok, np.round((normal_cam / np.maximum(norm, 1e-12) + 1.0) * 127.5), 0.0)
        Image.fromarray(np.clip(normal_png, 0, 255).astype(np.uint8)).save(out / "normals" / f"{name}.png")

        if cfg.parts is not None:
            (out / "part_ids").mkdir(exist_ok=True)
            ids = np.round(_channel(ch, "IndexOB", "X")[..., 0]).astype(np.uint16)
            Image.fromarray(ids).save(out / "part_ids" / f"{name}.png")

        frame = {"file_path": f"images/{name}.png", "transform_matrix": c2w,
                 "depth_file_path": f"depths/{name}.png", "normal_file_path": f"normals/{name}.png"}
        if i < n - 1 or last_has_next:
            vec = _channel(ch, "Vector", "XYZW")
            flow = np.stack([-vec[..., 2], vec[..., 3]], -1).astype(np.float32)
            next_c2w = cams["frames"][i + 1] if i < n - 1 else cams["next_pose"]
            far = flow_at_infinity(np.array([[cams["fl_x"], 0, cams["cx"]], [0, cams["fl_y"], cams["cy"]],
                                             [0, 0, 1.0]]), c2w, next_c2w, *depth.shape)
            flow = np.where(hit[..., None], flow, far).astype(np.float32)
            np.save(out / "flows" / f"{name}.npy", flow)
            frame["flow_file_path"] = f"flows/{name}.npy"
        frames.append(frame)

    if cfg.parts is not None:
        (out / "part_ids" / "parts.json").write_text(json.dumps(cams["part_names"]))
    meshes = np.load(work / ("mesh_small.npz" if (work / "mesh_small.npz").exists() else "mesh.npz"))
    vertices, faces, part = meshes["vertices"], meshes["faces"], meshes["part"]
    trimesh.Trimesh(vertices, faces, process=False).export(out / "mesh.ply")
    obj = trimesh.Trimesh(vertices, faces[part == 0], process=False)
    obj.remove_unreferenced_vertices()
    obj.export(out / "object.ply")

    return {
        "camera_model": "OPENCV",
        "fl_x": cams["fl_x"], "fl_y": cams["fl_y"], "cx": cams["cx"], "cy": cams["cy"],
        "w": cams["w"], "h": cams["h"], "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "depth_unit_scale_factor": 1e-3,
        "mesh_file_path": "mesh.ply",
        "object_mesh_file_path": "object.ply",
        "frames": frames,
    }
