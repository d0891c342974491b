"""Every preset in configs/ is an ns-train command that ns-train's own parser accepts and that sets what it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vision3d.methods.presets import find_preset, ns_train_command, preset_flags, presets_dir

PRESETS = sorted(presets_dir().glob("*/*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_preset_parses_as_ns_train_parses_it_and_sets_every_flag(path: Path, tmp_path):
    """Fails on a flag tyro does not know (a renamed config field), a value of the wrong type, or a flag that does
    not reach the config ns-train would train with."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    preset = yaml.safe_load(path.read_text())
    command = ns_train_command(preset["method"], find_preset(preset["method"], str(path)), tmp_path)
    config = tyro.cli(AnnotatedBaseConfigUnion, args=command[1:])
    assert config.method_name == preset["method"]
    assert config.pipeline.datamanager.data == tmp_path
    for owner, attribute, key, value in preset_flags(config, preset):
        parsed = getattr(owner, attribute)
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            value = type(parsed)(value)  # YAML reads 5e-4 as text; the command passes it as text either way
        assert parsed == value, key


@pytest.mark.parametrize("key", ["pipeline.model.no-such-field", "optimizers.no-such-group.optimizer.lr"])
def test_a_mistyped_flag_is_an_error_naming_the_preset_and_the_flag(key: str, tmp_path):
    """A flag whose path misses an attribute or a dict entry (the optimizer groups) is one clear error, not a
    traceback, when a benchmark applies the preset in process."""
    from vision3d.errors import Vision3DError
    from vision3d.methods.helixsurf.config import helixsurf
    from vision3d.methods.presets import apply_preset

    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"method": "helixsurf", "trainer": {key: 1}}))
    with pytest.raises(Vision3DError, match=rf"typo\.yaml: '{key}' is not a field of the helixsurf config"):
        apply_preset(helixsurf.config, path)
