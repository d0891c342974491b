"""Training lowers the loss; checkpoints round-trip; evaluation, the classical baseline, pictures and the CLI."""

import json

import numpy as np
import pytest
import torch
from pose_helpers import one_thread, small_room  # noqa: F401  (autouse fixture: importing it applies it here)
from typer.testing import CliRunner

from vision3d.geometry import make_pose, project_points, random_rotation
from vision3d.pose.data import PairDataset, frames_from_nerfstudio, select_pairs
from vision3d.pose.evaluate import epipolar_picture, essential_pose, predict_poses, summarize
from vision3d.pose.gcr import GCRConfig
from vision3d.pose.matching import Matcher
from vision3d.pose.network import PoseRegressorConfig
from vision3d.pose.train import DataConfig, TrainConfig, load_checkpoint, train


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    return small_room(tmp_path_factory, seed=7, width=64, height=48)


@pytest.fixture(scope="module")
def dataset(room):
    fs = frames_from_nerfstudio(room)
    pairs = [(0, i, j) for i, j in select_pairs(fs, min_overlap=0.1, max_rotation_deg=90)][:6]
    ds = PairDataset([fs], pairs, (48, 64), Matcher("sift"), max_matches=64)
    for k in range(len(ds)):
        ds[k]
    return ds


def test_tiny_training_run_lowers_the_loss(dataset, tmp_path):
    cfg = TrainConfig(model=PoseRegressorConfig.preset("tiny"), gcr=GCRConfig(enabled=False), steps=24,
                      batch_size=4, lr=2e-3, warmup_steps=2, log_every=4, output=str(tmp_path))
    model, history = train(cfg, dataset, progress=False)
    print([round(h["pose"], 3) for h in history])
    assert history[-1]["pose"] < 0.7 * history[0]["pose"]
    loaded = load_checkpoint(tmp_path / "model.pt")
    x = dataset[0]["img1"][None]
    assert torch.allclose(loaded(x, x)["pose2to1"], model.eval()(x, x)["pose2to1"], atol=1e-5)


def test_ctrl_c_saves_a_loadable_checkpoint(dataset, tmp_path, monkeypatch):
    import vision3d.pose.train as pose_train

    real, calls = pose_train.symmetric_pose_loss, []

    def loss_then_ctrl_c(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(pose_train, "symmetric_pose_loss", loss_then_ctrl_c)
    cfg = TrainConfig(model=PoseRegressorConfig.preset("tiny"), gcr=GCRConfig(enabled=False), steps=50,
                      batch_size=2, log_every=1, output=str(tmp_path))  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        train(cfg, dataset, progress=False)
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert len(torch.load(tmp_path / "model.pt", weights_only=True)["history"]) == 3  # the 3 finished steps
    x = dataset[0]["img1"][None]
    assert torch.isfinite(loaded(x, x)["pose2to1"]).all()


def test_mirror_prob_trains_on_mirrored_pairs(dataset, monkeypatch):
    import vision3d.pose.train as pose_train

    seen = []
    real = pose_train.symmetric_pose_loss
    monkeypatch.setattr(pose_train, "symmetric_pose_loss", lambda out, T21: seen.append(T21) or real(out, T21))
    base = dict(model=PoseRegressorConfig.preset("tiny"), gcr=GCRConfig(enabled=False), steps=3, batch_size=2)
    train(TrainConfig(**base, mirror_prob=1.0), dataset, progress=False, save=False)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    truth = [dataset[k]["T21"] for k in range(len(dataset))]
    for T21 in torch.cat(seen):  # noqa: N806  every pose the loss saw is the mirror image of a training pose
        assert min(float((mirror @ T21 @ mirror - t).abs().max()) for t in truth) < 1e-6
        assert min(float((T21 - t).abs().max()) for t in truth) > 1e-3
    with pytest.raises(ValueError, match="mirror_prob"):
        train(TrainConfig(**base, mirror_prob=1.5), dataset, progress=False, save=False)


def test_gcr_and_mirroring_leave_the_batch_order_alone(dataset, monkeypatch):
    """An A/B run with the same seed sees the same batches: GCR's and mirroring's draws do not shift the shuffle
    (8 steps of 2 over 6 pairs cross two epoch boundaries, where a shared generator would reorder)."""
    import vision3d.pose.train as pose_train

    real = pose_train.symmetric_pose_loss

    def poses_seen(**changes):
        seen = []
        monkeypatch.setattr(pose_train, "symmetric_pose_loss", lambda out, T21: seen.append(T21) or real(out, T21))
        cfg = TrainConfig(model=PoseRegressorConfig.preset("tiny"), steps=8, batch_size=2, seed=3, **{
            "gcr": GCRConfig(enabled=False), **changes})
        train(cfg, dataset, progress=False, save=False)
        return torch.cat(seen)

    plain = poses_seen()
    assert torch.equal(poses_seen(gcr=GCRConfig(num_depth_corr=32, min_inliers=8)), plain)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    mirrored = poses_seen(mirror_prob=0.5)
    flipped = [not torch.equal(m, p) for m, p in zip(mirrored, plain, strict=True)]
    assert 0 < sum(flipped) < len(plain)
    for m, p, f in zip(mirrored, plain, flipped, strict=True):
        assert not f or torch.allclose(m, mirror @ p @ mirror, atol=1e-6)


def test_device_names_are_checked():
    from vision3d.backends import cuda_available, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if cuda_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="only cpu and cuda"):
        resolve_device("meta")
    if not cuda_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            train(TrainConfig(model=PoseRegressorConfig.preset("tiny"), device="cuda:0"), save=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: training on cuda (GCR's sampling and "
                                                          "solver on the device)")  # fmt: skip
def test_training_with_gcr_and_mirroring_on_cuda(dataset, tmp_path):
    cfg = TrainConfig(model=PoseRegressorConfig.preset("tiny"), gcr=GCRConfig(num_depth_corr=32, min_inliers=8),
                      steps=4, batch_size=2, log_every=2, mirror_prob=0.5, device="cuda", output=str(tmp_path))
    model, history = train(cfg, dataset, progress=False)
    assert next(model.parameters()).is_cuda
    assert all(np.isfinite(h["pose"]) and np.isfinite(h["gcr"]) for h in history) and history[-1]["solved"] > 0
    T_pred, T_gt, sec = predict_poses(model, dataset)  # noqa: N806
    assert T_pred.shape == T_gt.shape == (len(dataset), 4, 4) and np.isfinite(T_pred).all() and sec > 0
    loaded = load_checkpoint(tmp_path / "model.pt")  # saved from the CPU: loads and agrees on the CPU
    x = dataset[0]["img1"][None]
    assert torch.allclose(loaded(x, x)["pose2to1"], model.cpu()(x, x)["pose2to1"], atol=1e-4)


def test_bad_checkpoints_are_named_with_their_problem(dataset, tmp_path):
    from vision3d.errors import CheckpointError, CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError, match="absent.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pt: cannot read as a torch checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a vision3d pose checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    model = PoseRegressorConfig.preset("tiny").setup()
    torch.save({"model": model.state_dict(), "model_config": {**PoseRegressorConfig.preset("tiny").to_dict(),
                                                              "enc_dim": 32}}, tmp_path / "mixed.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match="mixed.pt: its model_config and weights do not make a model"):
        load_checkpoint(tmp_path / "mixed.pt")


def test_training_with_gcr_runs_and_solves(dataset, tmp_path):
    cfg = TrainConfig(model=PoseRegressorConfig.preset("tiny"), gcr=GCRConfig(num_depth_corr=32, min_inliers=8),
                      steps=4, batch_size=2, log_every=2, output=str(tmp_path))
    _, history = train(cfg, dataset, progress=False, save=False)
    assert all(np.isfinite(h["pose"]) and np.isfinite(h["gcr"]) for h in history)
    assert history[-1]["solved"] > 0


def test_predict_and_summarize(dataset):
    model = PoseRegressorConfig.preset("tiny").setup()
    T_pred, T_gt, sec = predict_poses(model, dataset, batch_size=4)
    assert T_pred.shape == T_gt.shape == (len(dataset), 4, 4) and sec > 0
    out = summarize(T_gt, T_gt)
    assert out["auc@5"] == pytest.approx(1.0) and out["pairs"] == len(dataset)


def test_essential_baseline_recovers_pose_from_exact_matches():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(100, 3, generator=g, dtype=torch.float64) * 2 + torch.tensor([-1, -1, 4.0], dtype=torch.float64)
    T21 = make_pose(random_rotation(1, 0.2, generator=g, dtype=torch.float64)[0], torch.tensor([0.5, 0.1, 0.0], dtype=torch.float64))
    K = torch.tensor([[200.0, 0, 160], [0, 200.0, 120], [0, 0, 1]], dtype=torch.float64)
    p1, _ = project_points(X[None], K[None])
    X2 = (X - T21[:3, 3]) @ T21[:3, :3]  # camera-2 coordinates: X1 = R X2 + t
    p2, _ = project_points(X2[None], K[None])
    T = essential_pose(p1[0].numpy(), p2[0].numpy(), K.numpy(), K.numpy())
    assert T is not None
    from vision3d.geometry import relative_pose_errors

    r, t = relative_pose_errors(T[None], T21.numpy()[None])
    assert r[0] < 0.1 and t[0] < 0.5


def test_epipolar_picture(dataset):
    img1, img2, K1, K2, T21 = dataset.raw_pair(0)
    T_wrong = T21.copy()
    T_wrong[:3, 3] = -T21[:3, 3] + np.array([0.5, 0.5, 0.0])
    pic = epipolar_picture(img1, img2, K1, K2, T_wrong, T21)
    assert pic.shape == (48, 128, 3) and pic.max() <= 1.0
    right = pic[:, 64:]  # true lines in green, predicted in red, on image 2
    assert ((right[..., 1] > 0.8) & (right[..., 0] < 0.3)).any()
    assert ((right[..., 0] > 0.85) & (right[..., 1] < 0.3)).any()


def test_cli_train_eval_predict(room, tmp_path, monkeypatch):
    from vision3d.cli import app

    monkeypatch.setenv("VISION3D_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(app, ["pose", "train", "--preset", "tiny", "--steps", "3", "--batch-size", "2", "--rooms", "0",
                              "--scenes", str(room), "--matcher", "sift", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "model.pt").is_file() and json.loads((out / "history.json").read_text())
    res = runner.invoke(app, ["pose", "eval", str(out / "model.pt"), "--data", str(room), "--max-pairs", "3",
                              "--matcher", "sift", "--output", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    assert "AUC@5" in res.output and list((tmp_path / "eval").glob("pair_*.png"))
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert len(rows) == 2 and 0.0 <= rows[0]["auc@20"] <= 1.0
    res = runner.invoke(app, ["pose", "predict", str(out / "model.pt"), str(room / "images/0000.png"),
                              str(room / "images/0001.png"), "--output", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert "t direction" in res.output and (tmp_path / "p.png").is_file()


def test_cli_bad_pose_inputs_are_one_line(tmp_path):
    from vision3d.cli import app

    runner = CliRunner()
    model = tmp_path / "model.pt"
    torch.save({"model": PoseRegressorConfig.preset("tiny").setup().state_dict(),
                "model_config": PoseRegressorConfig.preset("tiny").to_dict()}, model)  # fmt: skip
    (tmp_path / "bad.png").write_text("not an image")
    res = runner.invoke(app, ["pose", "predict", str(model), str(tmp_path / "bad.png"), str(tmp_path / "bad.png")])
    def said(res) -> str:  # the message without rich's box and line wrapping
        return " ".join(res.output.replace("│", " ").split())

    assert res.exit_code == 2 and "cannot read image" in said(res), res.output
    res = runner.invoke(app, ["pose", "predict", str(model), str(tmp_path / "absent.png"), str(tmp_path / "bad.png")])
    assert res.exit_code == 2 and "image file not found" in said(res), res.output
    for data in ("rooms:x", "rooms:1:0", "rooms:1:2:3"):
        res = runner.invoke(app, ["pose", "eval", str(model), "--data", data, "--output", str(tmp_path / "e")])
        assert res.exit_code == 2 and "expected rooms:SEED" in said(res), res.output
    for args in (["--steps", "0"], ["--batch-size", "0"], ["--preset", "foo"], ["--lr", "-1"], ["--matcher", "foo"],
                 ["--rooms", "0"], ["--patch-embed", "vit"], ["--mirror-prob", "1.5"], ["--device", "gpu0"]):  # fmt: skip
        res = runner.invoke(app, ["pose", "train", "--output", str(tmp_path / "t"), *args])
        assert res.exit_code == 2 and args[0] in said(res), res.output
    assert not (tmp_path / "t").exists()
    from vision3d.errors import CheckpointNotFoundError

    res = runner.invoke(app, ["pose", "train", "--rooms", "1", "--init", str(tmp_path / "absent.pth"), "--preset",
                              "tiny", "--output", str(tmp_path / "t")])  # fmt: skip
    assert isinstance(res.exception, CheckpointNotFoundError) and "never downloads" in str(res.exception)


def test_data_config_renders_rooms_once(tmp_path):
    dc = DataConfig(procedural_rooms=1, room_views=4, render_size=(24, 32), cache_dir=str(tmp_path))
    sets = dc.framesets()
    assert len(sets) == 1 and len(sets[0]) == 4
    mtime = next(tmp_path.glob("room*/transforms.json")).stat().st_mtime
    dc.framesets()
    assert next(tmp_path.glob("room*/transforms.json")).stat().st_mtime == mtime


def _geloc3r_benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "geloc3r.py"
    spec = importlib.util.spec_from_file_location("geloc3r_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_gpu_command_wires_up_its_config():
    """The GPU-scale command's flags reach the TrainConfig it trains with (parsed on the CPU, not run)."""
    bench = _geloc3r_benchmark()
    args = bench.parse_args(["--protocol", "unseen-scenes", "--device", "cuda", "--preset", "gpu-small",
                             "--init", "/x/reloc3r.pth", "--steps", "7"])
    model_cfg = bench.model_config(args)
    assert model_cfg.to_dict() == PoseRegressorConfig.preset("gpu-small").to_dict()
    plain, ours = (bench.train_config(args, model_cfg, arm, seed=2) for arm in ("regression", "regression + GCR"))
    assert (plain.device, plain.init, plain.steps, plain.seed) == ("cuda", "/x/reloc3r.pth", 7, 2)
    assert not plain.gcr.enabled and ours.gcr.enabled
    assert plain.to_dict() | {"gcr": None} == ours.to_dict() | {"gcr": None}  # the arms differ only in GCR
    matches_only = bench.train_config(bench.parse_args(["--gcr-depth-corr", "0"]), model_cfg, "regression + GCR", 0)
    assert not matches_only.gcr.use_depth and matches_only.gcr.use_matches and ours.gcr.use_depth
    with pytest.raises(SystemExit):
        bench.parse_args(["--protocol", "both"])


def test_benchmark_seen_scene_protocol_runs_tiny(tmp_path):
    """``--protocol seen-scenes`` end to end at toy size: both arms train and are scored on held-out views."""
    bench = _geloc3r_benchmark()
    res = bench.main(["--protocol", "seen-scenes", "--steps", "2", "--seeds", "0", "--train-rooms", "1",
                      "--room-views", "8", "--train-render-size", "48", "64", "--pairs-per-room", "6",
                      "--test-pairs", "3", "--test-fraction", "0.4", "--batch-size", "2", "--no-castle",
                      "--device", "cpu", "--cache", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert res["budget"]["protocol"] == "seen-scenes"
    assert [r["arm"] for r in res["runs"]] == ["regression", "regression + GCR"]
    held = res["runs"][0]["held-out-views"]
    assert np.isfinite(held["median_rot"]) and "held-out-views" in res["baseline"]
    assert sum(v["pairs"] for v in held["per_scene"].values()) == held["pairs"]
    assert json.loads((tmp_path / "r.json").read_text())["budget"]["protocol"] == "seen-scenes"
    plain, ours = res["runs"]
    assert plain["gcr_diagnostics"] == {}
    diag = ours["gcr_diagnostics"]["all"]
    assert 0.0 <= diag["solved"] <= 1.0 and set(diag) >= {"solved", "inliers"}
    # arms run as separate processes (same data and budget) merge into one table; other budgets do not
    for k, run in enumerate(res["runs"]):
        (tmp_path / f"arm{k}.json").write_text(json.dumps({**res, "runs": [run]}))
    merged = bench.main(["--from-json", str(tmp_path / "arm0.json"), str(tmp_path / "arm1.json")])
    assert [r["arm"] for r in merged["runs"]] == ["regression", "regression + GCR"]
    (tmp_path / "other.json").write_text(json.dumps({**res, "budget": {**res["budget"], "steps": 3}}))
    with pytest.raises(SystemExit, match="other.json: its steps differ"):
        bench.main(["--from-json", str(tmp_path / "arm0.json"), str(tmp_path / "other.json")])
