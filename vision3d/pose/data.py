"""Image pairs with depth, intrinsics and relative pose: sources, pair selection and a torch ``Dataset``.

Sources, each giving a :class:`FrameSet` (per view: image, optional planar depth in metres, a
:class:`~vision3d.geometry.camera.PinholeCamera` (pixel centres at +0.5), and camera-to-world in **OpenCV** axes):

- :func:`frames_from_nerfstudio`: a nerfstudio scene (``transforms.json`` with ``fl_x, fl_y, cx, cy, w, h``,
  OpenGL ``transform_matrix``, ``depth_file_path`` 16-bit PNG in millimetres), read through
  :mod:`vision3d.data.scene`; our procedural rooms (:mod:`vision3d.pose.scenes`) and Blender renders use it.
- :func:`frames_from_castle_simu`: ViSP's rendered Castle-simu sequence (Debian ``visp-images-data``), imported
  once by :func:`vision3d.data.visp.import_castle_simu` (fetch, depth parsing, re-projection of the depth camera
  into the colour camera) as a cached nerfstudio scene and read with :func:`frames_from_nerfstudio`.
- :func:`scannet1500_pairs` / :func:`megadepth1500_pairs`: ReLoc3r's evaluation pair lists for users who
  have those data sets (no depth needed for evaluation).

:func:`seen_scene_split` makes the seen-scene protocol's pairs (same scenes, held-out camera positions).
:class:`PairDataset` resizes images to the network's size (intrinsics scaled, depth sampled nearest),
computes ``T_21 = inv(c2w_1) @ c2w_2`` (ReLoc3r's ground truth, camera 2 in camera 1) and, with a
:class:`~vision3d.pose.matching.Matcher`, sparse matches at the source resolution scaled to the network's.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vision3d.cache import cache_root
from vision3d.errors import Vision3DError
from vision3d.geometry.camera import PinholeCamera


class DataUnavailable(Vision3DError, RuntimeError):
    """A data set cannot be found or fetched; the message says why and what to do."""


@dataclass
class FrameSet:
    """Views of one scene. ``load_image(i) -> [H, W, 3]`` float in [0, 1]; ``load_depth(i) -> [H, W]`` metres or None."""

    name: str
    cameras: list[PinholeCamera]  # at the source resolution
    c2w: list[np.ndarray]  # [4, 4] each, OpenCV axes
    load_image: Callable[[int], np.ndarray]
    load_depth: Callable[[int], np.ndarray | None]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.c2w)

    @property
    def K(self) -> list[np.ndarray]:  # noqa: N802
        """Intrinsics [3, 3] of each view (the cameras' ``K``)."""
        return [c.K for c in self.cameras]

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """``(H, W)`` of each view."""
        return [(c.height, c.width) for c in self.cameras]


def frames_from_nerfstudio(path: str | Path) -> FrameSet:
    """A nerfstudio scene folder (or its transforms.json) as a :class:`FrameSet`."""
    from vision3d.data.scene import load_scene

    scene = load_scene(path, check_images=False)
    return FrameSet(
        name=str(scene.root.name),
        cameras=[f.camera for f in scene.frames],
        c2w=[f.c2w_opencv for f in scene.frames],
        load_image=scene.load_image,
        load_depth=(lambda i: scene.load_depth(i)) if scene.has_depth else (lambda i: None),
        meta={"root": str(scene.root)},
    )


def frames_from_castle_simu(root: str | Path | None = None) -> FrameSet:
    """ViSP Castle-simu: 40 rendered 640x480 grey frames with exact poses and depth aligned to the colour camera.

    Read through :func:`vision3d.data.visp.import_castle_simu`, which fetches the data (``apt-get download``), parses
    the depth maps and re-projects them into the colour camera; the nerfstudio scene it writes is cached under
    ``<cache>/scenes/`` (imported once) and read with :func:`frames_from_nerfstudio`. ``root`` is a Castle-simu
    folder (``Images/``, ``Depth/``, ``CameraPose/``, ``Config/``); default: fetched with apt.
    Raises :class:`DataUnavailable` with the reason when the data cannot be had.
    """
    from vision3d.data.apt_data import AptUnavailableError, NotInPackageError
    from vision3d.data.visp import VispFormatError, import_castle_simu

    scenes = cache_root() / "scenes"
    if root is None:
        scene = scenes / "castle-simu"
    else:
        key = hashlib.sha1(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:10]
        scene = scenes / f"castle-simu-{key}"
    if not (scene / "transforms.json").is_file():
        scenes.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".castle-simu-", dir=scenes))
        try:
            import_castle_simu(tmp, source=root)
            if scene.exists():  # a partial or concurrent import; ours is complete
                shutil.rmtree(scene, ignore_errors=True)
            tmp.rename(scene)
        except (AptUnavailableError, NotInPackageError, VispFormatError, FileNotFoundError) as err:
            raise DataUnavailable(f"Castle-simu unavailable: {err}") from err
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    fs = frames_from_nerfstudio(scene)
    fs.name = "castle-simu"
    return fs


def covisibility(fs: FrameSet, i: int, j: int, step: int = 8, tol: float = 0.05, depths: dict | None = None) -> float:
    """Fraction of view i's valid depth pixels (subsampled) that land inside view j and pass its depth test.
    ``depths`` memoises loaded depth maps across calls."""
    if depths is None:
        depths = {}
    for k in (i, j):
        if k not in depths:
            depths[k] = fs.load_depth(k)
    d1, d2 = depths[i], depths[j]
    if d1 is None or d2 is None:
        return float("nan")
    v, u = np.mgrid[0: d1.shape[0]: step, 0: d1.shape[1]: step].reshape(2, -1)
    z = d1[v, u]
    ok = z > 0
    if not ok.any():
        return 0.0
    xy = fs.cameras[i].normalize_index(np.stack([u[ok], v[ok]], -1))
    X = np.concatenate([xy, np.ones_like(xy[:, :1])], -1) * z[ok, None]  # noqa: N806
    T = np.linalg.inv(fs.c2w[j]) @ fs.c2w[i]  # noqa: N806
    Y = X @ T[:3, :3].T + T[:3, 3]  # noqa: N806
    front = Y[:, 2] > 1e-6
    x, y = np.floor(fs.cameras[j].project(np.concatenate([Y[:, :2], np.maximum(Y[:, 2:], 1e-6)], -1))).astype(int).T
    h, w = d2.shape
    inb = front & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    seen = np.zeros(len(Y), bool)
    zz = d2[y[inb], x[inb]]
    seen[inb] = (zz > 0) & (np.abs(zz - Y[inb, 2]) < tol * Y[inb, 2])
    return float(seen.mean())


def select_pairs(fs: FrameSet, max_pairs: int | None = None, min_overlap: float = 0.3, max_overlap: float = 0.95,
                 max_rotation_deg: float = 60.0, seed: int = 0,
                 views: Iterable[int] | None = None) -> list[tuple[int, int]]:
    """Pairs (i < j) whose depth covisibility lies in ``[min_overlap, max_overlap]`` and whose relative rotation
    is below ``max_rotation_deg``; a seeded random subset of ``max_pairs``. Without depth, rotation alone.
    ``views``: only pairs of these view indices (default: all)."""
    pairs = []
    depths: dict = {}
    pool = sorted(set(range(len(fs))) if views is None else set(views))
    for a, i in enumerate(pool):
        for j in pool[a + 1:]:
            rel = np.linalg.inv(fs.c2w[i]) @ fs.c2w[j]
            angle = np.degrees(np.arccos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1, 1)))
            if angle > max_rotation_deg or np.linalg.norm(rel[:3, 3]) < 1e-6:
                continue
            ov = covisibility(fs, i, j, depths=depths)
            if np.isnan(ov) or min_overlap <= min(ov, covisibility(fs, j, i, depths=depths)) and ov <= max_overlap:
                pairs.append((i, j))
    rng = np.random.default_rng(seed)
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = np.sort(rng.choice(len(pairs), max_pairs, replace=False))
        pairs = [pairs[k] for k in keep]
    return pairs


def _resize_image(img: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None].float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp(0, 1)


def _resize_depth(depth: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Nearest sample at the centre of each output pixel (no mixing of foreground and background)."""
    h, w = depth.shape
    ys = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(int), h - 1)
    xs = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(int), w - 1)
    return torch.from_numpy(np.ascontiguousarray(depth[ys][:, xs])).float()


class PairDataset(torch.utils.data.Dataset):
    """Pairs ``(frameset index, i, j)`` as dicts of tensors at ``image_size`` (H, W):

    ``img1, img2 [3, H, W]``, ``depth1, depth2 [H, W]`` (zeros and ``has_depth=False`` without depth),
    ``K1, K2 [3, 3]``, ``T21 [4, 4]`` (camera 2 in camera 1), ``matches [max_matches, 4]`` as
    ``(x1, y1, x2, y2)`` pixels with ``match_mask [max_matches]``, ``name``.
    Matches are computed once per pair at the source resolution and kept (``cache=True`` keeps whole samples).
    """

    def __init__(self, framesets: list[FrameSet], pairs: list[tuple[int, int, int]], image_size: tuple[int, int],
                 matcher=None, max_matches: int = 256, cache: bool = True, match_cache: str | Path | None = None):
        self.match_cache = Path(match_cache) if match_cache else None
        self.framesets, self.pairs = framesets, list(pairs)
        self.image_size, self.matcher, self.max_matches, self.cache = tuple(image_size), matcher, max_matches, cache
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def pose21(self, index: int) -> np.ndarray:
        """Ground-truth ``T21`` [4, 4] of a pair (camera 2 in camera 1), without loading its images."""
        s, i, j = self.pairs[index]
        return np.linalg.inv(self.framesets[s].c2w[i]) @ self.framesets[s].c2w[j]

    def raw_pair(self, index: int):
        """Full-resolution images, K's and the ground-truth ``T21`` of a pair (for the classical baseline)."""
        s, i, j = self.pairs[index]
        fs = self.framesets[s]
        return fs.load_image(i), fs.load_image(j), fs.K[i], fs.K[j], self.pose21(index)

    def _match(self, fs: FrameSet, i: int, j: int, img1, img2):
        """Matches of a pair, read from / written to ``match_cache`` (one npz per pair and matcher) when set."""
        path = self.match_cache / _match_key(fs, i, j, self.matcher.method) if self.match_cache else None
        if path is not None and path.is_file():
            z = np.load(path)
            return z["k1"], z["k2"], z["score"]
        k1, k2, score = self.matcher.match(img1, img2)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, k1=k1, k2=k2, score=score)
        return k1, k2, score

    def __getitem__(self, index: int) -> dict:
        if index in self._cache:
            return self._cache[index]
        s, i, j = self.pairs[index]
        fs = self.framesets[s]
        h, w = self.image_size
        img1, img2 = fs.load_image(i), fs.load_image(j)
        sample: dict = {"name": f"{fs.name}/{i}-{j}"}
        Ks = []  # noqa: N806
        for key, img, k in (("img1", img1, i), ("img2", img2, j)):
            sh, sw = img.shape[:2]
            sample[key] = _resize_image(img, (h, w))
            S = np.diag([w / sw, h / sh, 1.0])  # noqa: N806
            Ks.append(S @ fs.K[k])
        sample["K1"], sample["K2"] = (torch.from_numpy(k).float() for k in Ks)
        d1, d2 = fs.load_depth(i), fs.load_depth(j)
        sample["has_depth"] = d1 is not None and d2 is not None
        sample["depth1"] = _resize_depth(d1, (h, w)) if d1 is not None else torch.zeros(h, w)
        sample["depth2"] = _resize_depth(d2, (h, w)) if d2 is not None else torch.zeros(h, w)
        sample["T21"] = torch.from_numpy(self.pose21(index)).float()
        matches = torch.zeros(self.max_matches, 4)
        mask = torch.zeros(self.max_matches, dtype=torch.bool)
        if self.matcher is not None:
            k1, k2, score = self._match(fs, i, j, img1, img2)
            order = np.argsort(-score)[: self.max_matches]
            n = len(order)
            if n:
                s1 = np.array([w / img1.shape[1], h / img1.shape[0]])
                s2 = np.array([w / img2.shape[1], h / img2.shape[0]])
                matches[:n] = torch.from_numpy(np.concatenate([k1[order] * s1, k2[order] * s2], -1)).float()
                mask[:n] = True
        sample["matches"], sample["match_mask"] = matches, mask
        if self.cache:
            self._cache[index] = sample
        return sample


def _match_key(fs: FrameSet, i: int, j: int, method: str) -> str:
    root = str(fs.meta.get("root", fs.name)).strip("/").replace("/", "_")
    return f"{root}__{i}-{j}__{method}.npz"


def build_pair_dataset(framesets: list[FrameSet], image_size, pairs_per_scene: int | None = 40, matcher=None,
                       max_matches: int = 256, seed: int = 0, match_cache: str | Path | None = None,
                       **select_kwargs) -> PairDataset:
    pairs = []
    for s, fs in enumerate(framesets):
        pairs += [(s, i, j) for i, j in select_pairs(fs, pairs_per_scene, seed=seed + s, **select_kwargs)]
    return PairDataset(framesets, pairs, image_size, matcher, max_matches, match_cache=match_cache)


def seen_scene_split(framesets: list[FrameSet], test_fraction: float = 0.25, train_pairs_per_scene: int | None = 40,
                     test_pairs_per_scene: int | None = 20, seed: int = 0, **select_kwargs,
                     ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """The seen-scene (relocalization) protocol's ``(train, test)`` pairs ``(scene, i, j)``: same scenes,
    disjoint camera positions.

    In each scene a seeded random ``test_fraction`` of the views (at least 2) is held out; test pairs join two
    held-out views, training pairs two of the others, both chosen by :func:`select_pairs` (overlap and
    baseline, as ReLoc3r samples them) with ``select_kwargs``. So no test image appears in any training pair.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    train, test = [], []
    for s, fs in enumerate(framesets):
        n = len(fs)
        n_test = max(2, int(round(test_fraction * n)))
        if n - n_test < 2:
            raise ValueError(f"{fs.name}: {n} views are too few to hold out {n_test} and train on the rest")
        held = set(np.random.default_rng(seed + s).choice(n, n_test, replace=False).tolist())
        train += [(s, i, j) for i, j in select_pairs(fs, train_pairs_per_scene, seed=seed + s,
                                                     views=set(range(n)) - held, **select_kwargs)]
        test += [(s, i, j) for i, j in select_pairs(fs, test_pairs_per_scene, seed=seed + s, views=held,
                                                    **select_kwargs)]
    return train, test


def mirror_pairs(batch: dict, which: torch.Tensor) -> dict:
    """Mirror the pairs ``which`` ``[B]`` (bool) of a collated batch left-right, images and geometry together.

    Both images and depths are flipped along x, a pixel ``x`` becomes ``W - x`` (pixel centres at +0.5), so
    ``cx -> W - cx`` (and a skew ``K[0, 1]`` changes sign), matches move the same way, and the pose is
    conjugated by the mirror ``S = diag(-1, 1, 1)`` of each camera frame: ``T21 -> S T21 S`` (still a rotation
    and a translation). The mirrored pair is a true pair of a mirrored scene, so every GT relation (depth
    reprojection, epipolar geometry) holds exactly.
    Returns a new dict; the input is not modified.
    """
    if not bool(which.any()):
        return batch
    out = dict(batch)
    w = batch["img1"].shape[-1]
    sel = which.view(-1, 1, 1, 1)
    for key in ("img1", "img2"):
        out[key] = torch.where(sel, batch[key].flip(-1), batch[key])
    for key in ("depth1", "depth2"):
        out[key] = torch.where(sel[:, 0], batch[key].flip(-1), batch[key])
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=batch["T21"].dtype))
    out["T21"] = torch.where(sel[:, 0], mirror @ batch["T21"] @ mirror, batch["T21"])
    for key in ("K1", "K2"):
        flipped = batch[key].clone()
        flipped[:, 0, 2] = w - flipped[:, 0, 2]
        flipped[:, 0, 1] = -flipped[:, 0, 1]
        out[key] = torch.where(sel[:, 0], flipped, batch[key])
    flipped = batch["matches"].clone()
    flipped[..., 0::2] = torch.where(batch["match_mask"][..., None], w - flipped[..., 0::2], flipped[..., 0::2])
    out["matches"] = torch.where(sel[:, 0], flipped, batch["matches"])
    return out


def collate(samples: list[dict]) -> dict:
    out = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


# ---------------------------------------------------------------- ReLoc3r's evaluation pair lists


def _read_matrix(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataUnavailable(f"{path}: missing file")
    return np.loadtxt(path)


def scannet1500_pairs(root: str | Path) -> tuple[FrameSet, list[tuple[int, int, int]]]:
    """ScanNet1500 as ReLoc3r / LoFTR lay it out: ``<root>/test.npz`` with ``name`` rows
    ``(scene, sub, frame1, frame2)`` and ``<root>/scannet_test_1500/scene%04d_%02d/{color/%d.jpg, pose/%d.txt,
    intrinsic/intrinsic_depth.txt}`` (``pose`` is camera-to-world, OpenCV axes; images are used at 640x480 as
    ReLoc3r does, so ``intrinsic_depth`` applies). Depth PNGs (mm) are read when ``depth/%d.png`` exists."""
    root = Path(root)
    index = root / "test.npz"
    if not index.is_file():
        raise DataUnavailable(f"{index}: ScanNet1500 pair list not found (expected ReLoc3r's data/scannet1500 layout)")
    names = np.load(index)["name"]
    base = root / "scannet_test_1500" if (root / "scannet_test_1500").is_dir() else root
    views: dict[tuple, int] = {}
    K, c2w, paths, depths = [], [], [], []  # noqa: N806
    pairs = []
    for row in names:
        scene = f"scene{int(row[0]):04d}_{int(row[1]):02d}"
        ids = []
        for frame in (int(row[2]), int(row[3])):
            key = (scene, frame)
            if key not in views:
                views[key] = len(c2w)
                d = base / scene
                K.append(_read_matrix(d / "intrinsic" / "intrinsic_depth.txt")[:3, :3])
                c2w.append(_read_matrix(d / "pose" / f"{frame}.txt"))
                paths.append(d / "color" / f"{frame}.jpg")
                depths.append(d / "depth" / f"{frame}.png")
            ids.append(views[key])
        pairs.append((0, ids[0], ids[1]))
    cameras = [PinholeCamera.from_K(k, 640, 480) for k in K]
    return FrameSet("scannet1500", cameras, c2w, _image_loader(paths, (480, 640)),
                    _png_depth_loader(depths, 1e-3)), pairs


def megadepth1500_pairs(root: str | Path) -> tuple[FrameSet, list[tuple[int, int, int]]]:
    """MegaDepth1500 as ReLoc3r lays it out: ``megadepth_test_pairs.txt`` (two relative image paths per line)
    and ``megadepth_meta_test.npz`` mapping each path to ``{'intrinsic': 3x3, 'pose': world-to-camera}``."""
    root = Path(root)
    pairs_file, meta_file = root / "megadepth_test_pairs.txt", root / "megadepth_meta_test.npz"
    for f in (pairs_file, meta_file):
        if not f.is_file():
            raise DataUnavailable(f"{f}: MegaDepth1500 file not found (expected ReLoc3r's data/megadepth1500 layout)")
    meta = np.load(meta_file, allow_pickle=True)
    views: dict[str, int] = {}
    K, c2w, paths = [], [], []  # noqa: N806
    pairs = []
    for line in pairs_file.read_text().splitlines():
        if not line.strip():
            continue
        ids = []
        for rel in line.split()[:2]:
            if rel not in views:
                entry = meta[rel].item()
                views[rel] = len(c2w)
                K.append(np.asarray(entry["intrinsic"], np.float64)[:3, :3])
                c2w.append(np.linalg.inv(np.asarray(entry["pose"], np.float64)))
                paths.append(root / rel)
            ids.append(views[rel])
        pairs.append((0, ids[0], ids[1]))
    sizes = []
    for p in paths:
        with Image.open(p) if p.is_file() else _missing(p) as im:
            sizes.append((im.height, im.width))
    cameras = [PinholeCamera.from_K(k, w, h) for k, (h, w) in zip(K, sizes, strict=True)]
    return FrameSet("megadepth1500", cameras, c2w, _image_loader(paths, None), lambda i: None), pairs


def _missing(path: Path):
    raise DataUnavailable(f"{path}: image not found")


def _image_loader(paths: list[Path], size: tuple[int, int] | None):
    def load(i: int) -> np.ndarray:
        if not paths[i].is_file():
            raise DataUnavailable(f"{paths[i]}: image not found")
        im = Image.open(paths[i]).convert("RGB")
        if size is not None and (im.height, im.width) != size:
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(im).astype(np.float32) / 255.0

    return load


def _png_depth_loader(paths: list[Path], scale: float):
    def load(i: int):
        if not paths[i].is_file():
            return None
        return np.asarray(Image.open(paths[i])).astype(np.float32) * scale

    return load
