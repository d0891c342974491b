"""What a non-editable install (``pip install .``, a wheel) needs at run time is inside the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import vision3d
from vision3d.methods.presets import presets_dir

PACKAGE = Path(vision3d.__file__).resolve().parent
CHECKOUT = PACKAGE.parent
RUNTIME_DATA = ("configs", "data/bundled")  # read by v3d train --preset, v3d demo and the tests of every method


def test_presets_are_found_inside_the_package():
    assert presets_dir() == PACKAGE / "configs"
    assert sorted(p.parent.name for p in presets_dir().glob("*/cpu.yaml")) == ["helixsurf", "ir-nerf"]


def test_the_wheel_ships_the_presets_and_the_bundled_scene(tmp_path):
    """Build the wheel from a copy of the checkout (setuptools builds in-tree) and check that every file of the
    presets and of the bundled scene is in it: a preset left out of ``package-data`` only shows after ``pip install``,
    as "no preset" from ``v3d train``."""
    if not (CHECKOUT / "pyproject.toml").is_file():
        pytest.skip(f"not a source checkout: no pyproject.toml beside {PACKAGE}")
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE, source / "vision3d", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(CHECKOUT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))).namelist())
    for folder in RUNTIME_DATA:
        files = [p.relative_to(source).as_posix() for p in (source / "vision3d" / folder).rglob("*") if p.is_file()]
        assert files, folder
        assert [f for f in files if f not in names] == [], f"vision3d/{folder}: files left out of the wheel"
