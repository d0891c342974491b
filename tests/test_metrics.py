"""Metrics against known answers; LPIPS never downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vision3d import metrics


def test_psnr_known_value():
    target = torch.zeros(8, 8, 3)
    pred = torch.full((8, 8, 3), 0.1)
    assert metrics.psnr(pred, target) == pytest.approx(20.0, abs=1e-4)
    assert metrics.psnr(target, target) == float("inf")


def test_ssim_identity_and_noise():
    image = torch.rand(32, 32, 3)
    assert metrics.ssim(image, image) == pytest.approx(1.0, abs=1e-5)
    assert metrics.ssim(image, (image + 0.3 * torch.randn_like(image)).clamp(0, 1)) < 0.9


def test_lpips_is_omitted_without_weights(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    metrics.lpips_model.cache_clear()
    try:
        out = metrics.image_metrics(torch.rand(16, 16, 3), torch.rand(16, 16, 3))
    finally:
        metrics.lpips_model.cache_clear()
    assert "lpips" not in out and {"psnr", "ssim"} <= out.keys()


def test_depth_abs_rel_ignores_invalid():
    gt = torch.tensor([[2.0, 0.0], [4.0, 1.0]])
    pred = torch.tensor([[1.0, 5.0], [4.0, 1.5]])
    assert metrics.depth_abs_rel(pred, gt) == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    with pytest.raises(ValueError, match="no pixel"):
        metrics.depth_abs_rel(pred, torch.zeros(2, 2))


def test_chamfer_fscore_shifted_cloud():
    points = np.random.default_rng(0).uniform(size=(500, 3))
    same = metrics.chamfer_fscore(points, points, threshold=0.01)
    assert same["chamfer_l1"] == 0 and same["fscore"] == 1.0
    shifted = metrics.chamfer_fscore(points + [0.05, 0, 0], points, threshold=0.01)
    assert shifted["fscore"] < 0.5 and shifted["accuracy"] <= 0.05 + 1e-9


def test_flow_metrics():
    gt = np.zeros((4, 4, 2))
    pred = gt.copy()
    pred[0, 0] = [3.0, 4.0]
    out = metrics.flow_metrics(pred, gt)
    assert out["epe"] == pytest.approx(5.0 / 16) and out["pct3"] == pytest.approx(100.0 / 16)
    # Angular error of a 90-degree rotated unit flow: cos = 1 / 2 -> 60 degrees.
    assert metrics.flow_metrics(np.array([[[0.0, 1.0]]]), np.array([[[1.0, 0.0]]]))["ae"] == pytest.approx(60.0)
    with pytest.raises(ValueError, match="no valid pixel"):
        metrics.flow_metrics(pred, gt, mask=np.zeros((4, 4), bool))
