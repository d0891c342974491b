"""`v3d demo`'s training config: seed points and the short-run schedule keep held-out quality up.

A few hundred steps of the demo's own config (:func:`vision3d.demo.demo_config`) on the bundled scene; the
thresholds are measured values minus a margin, so a change that drops the seed points, or a schedule or
densification change that makes the demo blurrier, fails here instead of in the next demo run.
"""

from __future__ import annotations

import pytest

from vision3d.demo import demo_config
from vision3d.methods import run

STEPS = 300
# Measured at 300 steps (CPU, 1 thread): PSNR 21.3, SSIM 0.51; with random_init=True instead of the seed
# points, at the same budget: 18.3 / 0.28 (and the demo before seed points, at 1500 steps: 17.6 / 0.34).
MIN_PSNR, MIN_SSIM = 20.0, 0.42


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory):
    config = demo_config("vision3d-splat", STEPS, tmp_path_factory.mktemp("demo"))
    trainer = run.train(config)
    return config, trainer, run.mean_metrics(run.evaluate(trainer))


def test_demo_schedule_fits_the_step_budget(short_demo):
    config, trainer, _ = short_demo
    model = config.pipeline.model
    assert model.warmup_length < model.stop_split_at <= STEPS  # densify, then optimise
    assert model.sh_degree_interval * model.sh_degree <= STEPS  # the full SH degree is reached
    assert config.optimizers["means"]["scheduler"].max_steps == STEPS  # the means' lr decays within the run
    assert trainer.pipeline.datamanager.train_dataparser_outputs.metadata.get("points3D_xyz") is not None


def test_demo_held_out_quality_does_not_regress(short_demo):
    _, _, scores = short_demo
    assert scores["psnr"] > MIN_PSNR and scores["ssim"] > MIN_SSIM, scores


def test_sparse_demo_compares_base_and_det_gs_on_held_out_views(tmp_path):
    """`v3d demo --method det-gs`: two runs on the same 3-view split that differ only in DET-GS's regularizers."""
    import json

    import yaml

    from vision3d.demo import run_sparse_demo

    means = run_sparse_demo(tmp_path, steps=30, train_views=3)
    assert set(means) == {"base", "det-gs"}
    for variant, row in means.items():
        assert row["psnr"] > 5 and 0 < row["depth_abs_rel"] < 1, (variant, row)
        config = yaml.load((tmp_path / "runs" / f"{variant}-3views" / "det-gs" / "run" / "config.yml").read_text(),
                           Loader=yaml.Loader)  # fmt: skip
        losses = config.pipeline.model.losses
        assert losses.use_depth == losses.use_edge == losses.use_tv == (variant == "det-gs")
        assert config.pipeline.model.sky_floaters.enabled == (variant == "det-gs")
        assert config.pipeline.datamanager.depth_prior.source == "monocular_like"  # not the GT depth (an oracle)
        assert len(list((tmp_path / "renders" / variant).glob("view*_render.png"))) == 24 - 3
    assert means["base"]["depth_abs_rel"] != means["det-gs"]["depth_abs_rel"]
    assert json.loads((tmp_path / "metrics.json").read_text())["train_views"] == 3
    assert (tmp_path / "base_vs_det-gs.png").is_file()
