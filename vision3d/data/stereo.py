"""Real rectified stereo pairs with ground-truth disparity (Middlebury), for checking depth methods.

* :func:`motorcycle`: Middlebury 2014 "Motorcycle" as shipped inside the scikit-image wheel
  (``skimage.data.stereo_motorcycle()``, 741×500, GT disparity known on 93 % of the pixels; BSD-3
  package, Middlebury image: cite Scharstein et al., GCPR 2014).
* :func:`aloe`: Middlebury 2006 "Aloe" from Debian's ``opencv-doc`` examples (``aloeL.jpg``,
  ``aloeR.jpg``, ``aloeGT.png`` = 8-bit disparity in pixels, 0 = unknown; 1282×1110), fetched with
  ``apt-get download`` (:mod:`vision3d.data.apt_data`; raises ``AptUnavailableError`` when apt cannot
  reach its archive). Cite Scharstein & Pal, CVPR 2007 / Hirschmüller & Scharstein, CVPR 2007.

Both return a :class:`StereoPair`: ``left``/``right`` uint8 RGB [H, W, 3] and ``disparity`` float32
[H, W] in pixels of the left image (the left pixel ``x`` matches right pixel ``x - d``), NaN where unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPENCV_DOC_DATA = "/usr/share/doc/opencv-doc/examples/data"


@dataclass
class StereoPair:
    left: np.ndarray  # [H, W, 3] uint8
    right: np.ndarray  # [H, W, 3] uint8
    disparity: np.ndarray  # [H, W] float32, pixels, NaN = unknown
    name: str
    source: str

    @property
    def valid(self) -> np.ndarray:
        """[H, W] bool, where the GT disparity is known."""
        return np.isfinite(self.disparity)


def motorcycle() -> StereoPair:
    """Middlebury 2014 Motorcycle from scikit-image's bundled data (no download)."""
    import skimage.data

    left, right, disp = skimage.data.stereo_motorcycle()
    disp = np.asarray(disp, dtype=np.float32)
    disp = np.where(np.isfinite(disp) & (disp > 0), disp, np.nan).astype(np.float32)
    return StereoPair(np.asarray(left), np.asarray(right), disp, "motorcycle",
                      "Middlebury 2014 (Scharstein et al., GCPR 2014) via scikit-image's skimage.data")


def aloe() -> StereoPair:
    """Middlebury 2006 Aloe from Debian's opencv-doc (fetched with apt-get download, cached)."""
    from PIL import Image

    from vision3d.data.apt_data import extract_files

    paths = extract_files("opencv-doc", [f"{OPENCV_DOC_DATA}/{n}" for n in ("aloeL.jpg", "aloeR.jpg", "aloeGT.png")])
    left, right = (np.array(Image.open(p).convert("RGB")) for p in paths[:2])
    gt = np.array(Image.open(paths[2]))
    if gt.ndim == 3:
        gt = gt[..., 0]
    disp = np.where(gt > 0, gt.astype(np.float32), np.nan).astype(np.float32)
    return StereoPair(left, right, disp, "aloe",
                      "Middlebury 2006 Aloe (Scharstein & Pal 2007) via Debian opencv-doc examples/data")
