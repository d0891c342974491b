"""The v3d command: real --help for every group, info reports the backends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vision3d.cli import app
from vision3d.openmp import SPIN_SETTINGS, spin_hint, without_spin_settings

RUNNER = CliRunner()


def test_help_lists_groups():
    result = RUNNER.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "data", "bench", "info"):
        assert command in result.output


def test_info_reports_backends():
    result = RUNNER.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "gsplat_cuda_ops" in result.output and "default_device" in result.output


def test_v3d_shortens_openmp_spin_before_torch_loads():
    """libgomp reads GOMP_SPINCOUNT once, when torch loads it: the v3d process must set it before any import of
    torch, and leave a user's own GOMP_SPINCOUNT or OMP_WAIT_POLICY alone (vision3d.openmp); a process that only
    imports vision3d.cli (a test, a notebook) keeps its environment."""
    clean = without_spin_settings(os.environ)

    def run(program: str, **extra: str) -> str:
        probe = (f"import os, sys; sys.argv = [{program!r}]; import vision3d.cli; "
                 "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")
        return subprocess.run([sys.executable, "-c", probe], env={**clean, **extra}, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert run("/usr/local/bin/v3d") == "3000 False"
    assert run("/usr/local/bin/v3d", GOMP_SPINCOUNT="123") == "123 False"
    assert run("/usr/local/bin/v3d", OMP_WAIT_POLICY="PASSIVE") == "None False"
    assert run("pytest") == "None False"


def test_spin_hint_only_for_ns_train_without_a_spin_setting(monkeypatch):
    for name in SPIN_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert "export GOMP_SPINCOUNT=3000" in spin_hint(["/venv/bin/ns-train", "det-gs"])
    assert spin_hint(["/venv/bin/v3d", "demo"]) is None and spin_hint(["pytest"]) is None
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert spin_hint(["/venv/bin/ns-train", "det-gs"]) is None


def test_data_info_names_the_bad_file(tmp_path):
    result = RUNNER.invoke(app, ["data", "info", str(tmp_path)])
    assert result.exit_code != 0
    assert "transforms.json" in str(result.exception)


def test_bench_unknown_name_is_a_clear_error():
    result = RUNNER.invoke(app, ["bench", "no-such-benchmark"])
    assert result.exit_code != 0
    assert "no benchmark 'no-such-benchmark'" in result.output + str(result.exception)


def test_bench_outside_a_checkout_is_a_clear_error(tmp_path, monkeypatch):
    """A pip-installed vision3d has no benchmarks/ (they are the checkout's scripts): one line, no traceback."""
    from vision3d import bench
    from vision3d.errors import Vision3DError

    monkeypatch.setattr(bench, "CHECKOUT", tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Vision3DError, match="no benchmarks/ folder"):
        bench.run_benchmarks("fields")


def test_v3d_prints_bad_input_as_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    v3d = Path(sys.executable).parent / "v3d"
    result = subprocess.run([str(v3d), "data", "info", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path}/transforms.json: no such file (a scene folder needs a nerfstudio transforms.json)"
    assert "Traceback" not in result.stderr


def test_train_checks_the_scene_before_starting_ns_train(tmp_path):
    missing = RUNNER.invoke(app, ["train", "det-gs", "--preset", "sparse-3view", "--data", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "no such scene folder" in str(missing.exception)
    (tmp_path / "transforms.json").write_text('{"frames": [')
    corrupt = RUNNER.invoke(app, ["train", "det-gs", "--preset", "sparse-3view", "--data", str(tmp_path)])
    assert corrupt.exit_code != 0 and "malformed JSON" in str(corrupt.exception)
    assert "ns-train" not in corrupt.output  # failed before the command was even printed
    from vision3d.data.bundled import bundled_scene_path

    good = RUNNER.invoke(app, ["train", "det-gs", "--preset", "sparse-3view", "--data", str(bundled_scene_path()),
                               "--dry-run"])  # fmt: skip
    assert good.exit_code == 0 and "ns-train det-gs" in good.output, good.output


def test_demo_rejects_bad_options_before_training(tmp_path):
    zero = RUNNER.invoke(app, ["demo", "--steps", "0", "--output", str(tmp_path)])
    assert zero.exit_code == 2 and "give at least 1" in zero.output
    unknown = RUNNER.invoke(app, ["demo", "--method", "nosuch", "--steps", "1", "--output", str(tmp_path)])
    assert unknown.exit_code != 0 and "unknown method 'nosuch'" in str(unknown.exception)
    assert "vision3d-splat" in str(unknown.exception)


def test_ns_train_prints_a_flag_value_the_method_cannot_use_as_one_line(tmp_path):
    """Our methods' config checks raise ConfigError (a Vision3DError): under ns-train it is one line, not a traceback."""
    import subprocess
    import sys
    from pathlib import Path

    from vision3d.data.bundled import bundled_scene_path

    ns_train = Path(sys.executable).parent / "ns-train"
    result = subprocess.run([str(ns_train), "ir-nerf", "--data", str(bundled_scene_path()), "--vis", "tensorboard",
                             "--output-dir", str(tmp_path), "--pipeline.model.ir-nerf.phase-a-restarts", "0"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 1
    assert "error: phase_a_restarts must be at least 1, got 0" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
