"""Scenes that ship inside the package, so the demo and the tests run without Blender.

``vision3d/data/bundled/<name>/`` holds a complete nerfstudio scene rendered with ``v3d data render``
(see the README.md in each folder for the exact command, the model's origin and licence).
"""

from __future__ import annotations

from pathlib import Path

from vision3d.errors import Vision3DError


class BundledSceneNotFoundError(Vision3DError, FileNotFoundError):
    """No bundled scene of that name."""


BUNDLED_DIR = Path(__file__).with_name("bundled")
DEFAULT_SCENE = "armadillo"


def bundled_scenes() -> list[str]:
    """Names of the bundled scenes."""
    return sorted(p.parent.name for p in BUNDLED_DIR.glob("*/transforms.json"))


def bundled_scene_path(name: str = DEFAULT_SCENE) -> Path:
    """Folder of the bundled scene ``name`` (it holds ``transforms.json``)."""
    path = BUNDLED_DIR / name
    if not (path / "transforms.json").is_file():
        have = ", ".join(bundled_scenes()) or "none"
        raise BundledSceneNotFoundError(f"no bundled scene {name!r} in {BUNDLED_DIR} (bundled: {have})")
    return path
