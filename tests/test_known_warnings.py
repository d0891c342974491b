"""Our commands hide exactly the known-harmless third-party warnings (vision3d.known_warnings); the same text
from another module, another warning from the same module, and any process that is not one of our commands
(a test, a notebook) still show them."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from vision3d.known_warnings import KNOWN_HARMLESS, _category, hide_known_harmless, is_our_command

# What `make demo` printed (torch 2.14, nerfstudio 1.1.5, numba 0.68), one per KNOWN_HARMLESS entry.
SEEN = [
    "The TBB threading layer requires TBB version 2021 update 6 or later i.e., TBB_INTERFACE_VERSION >= 12060. "
    "Found TBB_INTERFACE_VERSION = 12050. The TBB threading layer is disabled.",
    "Converting a tensor with requires_grad=True to a scalar may lead to unexpected behavior.\n"
    "Consider using tensor.detach() first.",
    "`torch.cuda.amp.GradScaler(args...)` is deprecated. Please use `torch.amp.GradScaler('cuda', args...)` instead.",
    "`torch.cuda.amp.custom_fwd(args...)` is deprecated. Please use `torch.amp.custom_fwd(args..., "
    "device_type='cuda')` instead.",
    "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.",
]


def _shown(message: str, category: type[Warning], module: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hide_known_harmless()
        warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)
    return len(caught) == 1


@pytest.mark.parametrize(("known", "message"), list(zip(KNOWN_HARMLESS, SEEN, strict=True)))
def test_only_the_known_warning_from_its_module_is_hidden(known, message):
    pytest.importorskip("numba")
    category = _category(known.category)
    assert not _shown(message, category, known.module)
    assert _shown(message, category, "vision3d.methods.splat.model")  # the same text from our code shows
    assert _shown(message, category, known.module + "_other")
    assert _shown("something else is deprecated", category, known.module)  # another warning of that module
    other = RuntimeWarning if category is not RuntimeWarning else UserWarning
    assert _shown(message, other, known.module)


def test_custom_bwd_is_hidden_like_custom_fwd():
    known = KNOWN_HARMLESS[3]
    assert not _shown(SEEN[3].replace("custom_fwd", "custom_bwd"), FutureWarning, known.module)


def test_filters_apply_only_in_our_commands():
    assert is_our_command("/venv/bin/v3d") and is_our_command("/venv/bin/ns-train")
    for program in ("/venv/bin/pytest", "python", "-c", "", "/venv/bin/v3d-helper"):
        assert not is_our_command(program)


def test_v3d_hides_the_import_warnings_a_script_still_sees(tmp_path):
    """nerfstudio's torch.jit.script and torch.cuda.amp warnings at import: hidden in a process named v3d,
    shown to a script doing the same imports."""
    imports = "import vision3d.cli, nerfstudio.cameras.camera_utils, nerfstudio.field_components.activations"
    seen = {}
    for program in ("python", "v3d"):
        child = subprocess.run([sys.executable, "-c", f"import sys; sys.argv[0] = {program!r}; {imports}"],
                               capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert child.returncode == 0, child.stderr
        seen[program] = child.stderr
    assert "`torch.jit.script` is deprecated" in seen["python"] and "custom_fwd" in seen["python"], seen["python"]
    assert "Warning" not in seen["v3d"], seen["v3d"]
