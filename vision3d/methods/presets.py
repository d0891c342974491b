"""Presets (``vision3d/configs/<method>/<name>.yaml``) turned into the ``ns-train`` command they stand for.

A preset is plain data: the method, trainer flags, the dataparser and its flags. Keeping presets as
ns-train arguments (not as a second config system) means the run is an ordinary ``ns-train`` run, with
its ``config.yml``, checkpoints and viewer, and the printed command can be edited and re-run by hand.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import yaml

from vision3d.errors import Vision3DError


def presets_dir() -> Path:
    """The presets shipped in the package (``vision3d/configs/``, package data, so a wheel or ``pip install``
    has them; the checkout's top-level ``configs`` links there)."""
    return Path(__file__).resolve().parents[1] / "configs"


def find_preset(method: str, preset: str) -> Path:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise Vision3DError(f"{path}: preset file not found")
        return path
    path = presets_dir() / method / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise Vision3DError(f"{path}: no preset {preset!r} for {method} (have: {', '.join(known) or 'none'})")
    return path


def load_preset(preset_path: Path, method: str) -> dict:
    """The preset's YAML as a dict; a clear error naming the file if it is malformed or for another method."""
    try:
        preset = yaml.safe_load(preset_path.read_text())
    except yaml.YAMLError as err:
        raise Vision3DError(f"{preset_path}: malformed YAML ({err})") from err
    if not isinstance(preset, dict) or preset.get("method") != method:
        raise Vision3DError(f"{preset_path}: preset is for method {preset.get('method') if isinstance(preset, dict) else None!r}, not {method!r}")
    return preset


def ns_train_command(method: str, preset_path: Path, data: Path, extra: list[str] | None = None) -> list[str]:
    """The ``ns-train`` argument list for a preset: ``ns-train METHOD [trainer flags] [extra] --data DATA PARSER [parser flags]``."""
    preset = load_preset(preset_path, method)
    exe = shutil.which("ns-train", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    command = [exe or "ns-train", method]
    for key, value in (preset.get("trainer") or {}).items():
        command += [f"--{key}", str(value)]
    command += list(extra or [])
    command += ["--pipeline.datamanager.data", str(data)]
    if preset.get("dataparser"):
        command.append(preset["dataparser"])
        for key, value in (preset.get("dataparser-args") or {}).items():
            command += [f"--{key}", str(value)]
    return command


def preset_flags(config, preset: dict) -> list[tuple[object, str, str, object]]:  # noqa: ANN001
    """``(owner, attribute, key, value)`` for each flag of a loaded preset: trainer flags on the TrainerConfig
    ``config``, dataparser flags on its dataparser; ``a.b-c`` is attribute ``b_c`` of ``config.a`` (dict entries by
    key); owner None where an attribute or dict entry on the path does not exist."""
    parser = config.pipeline.datamanager.dataparser
    flags = [(config, key, value) for key, value in (preset.get("trainer") or {}).items()]
    flags += [(parser, key, value) for key, value in (preset.get("dataparser-args") or {}).items()]
    out = []
    for owner, key, value in flags:
        *path, leaf = key.replace("-", "_").split(".")
        for part in path:
            owner = owner.get(part) if isinstance(owner, dict) else getattr(owner, part, None)
        out.append((owner, leaf, key, value))
    return out


def apply_preset(config, preset_path: Path):  # noqa: ANN001, ANN201
    """A copy of a method's TrainerConfig with a preset's trainer flags and dataparser flags set in place
    (``a.b-c: v`` sets ``config.a.b_c = v``, dict entries by key), for in-process runs (benchmarks)."""
    import copy

    preset = load_preset(preset_path, config.method_name)
    config = copy.deepcopy(config)
    for obj, leaf, key, value in preset_flags(config, preset):
        if obj is None or not hasattr(obj, leaf):
            raise Vision3DError(f"{preset_path}: {key!r} is not a field of the {config.method_name} config")
        current = getattr(obj, leaf)
        setattr(obj, leaf, type(current)(value) if isinstance(current, (int, float, str)) and not isinstance(current, bool) else value)
    return config
