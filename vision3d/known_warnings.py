"""Third-party warnings that our commands hide because they are known to be harmless; nothing else.

Each entry of :data:`KNOWN_HARMLESS` names the warning's category, the start of its message and the module
that raises it, so the same text from any other module (ours included) still shows. :func:`hide_known_harmless`
installs them. :func:`hide_in_our_commands` does so only when the process is one of our commands (``v3d``, or
an ``ns-*`` command of nerfstudio, which imports our method configs through its entry points): it is called
at the import of ``vision3d.cli`` and of ``vision3d.methods.splat.config`` (which det-gs's config imports).
Tests, notebooks and scripts that import vision3d see every warning. In ``ns-train``, the warnings nerfstudio
raises while importing itself (the ``torch.jit.script`` and ``torch.cuda.amp.custom_fwd/bwd`` ones) come
before nerfstudio loads our configs, so they still show there; ``v3d`` hides them all.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import NamedTuple


class KnownWarning(NamedTuple):
    category: str  # class name; NumbaWarning is matched without importing numba
    message: str  # regular expression matched at the start of the message (case-insensitive)
    module: str  # the module that raises it (the warning's ``module``), matched exactly
    why: str


KNOWN_HARMLESS = (
    KnownWarning("NumbaWarning", r"The TBB threading layer requires TBB version", "numba.np.ufunc.parallel",
                 "Debian's TBB is older than Numba wants; Numba then uses its OpenMP/workqueue layer"),
    KnownWarning("UserWarning", r"Converting a tensor with requires_grad=True to a scalar", "nerfstudio.utils.writer",
                 "nerfstudio logs float(loss) of tensors that carry gradients; the value is right"),
    KnownWarning("FutureWarning", r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated",
                 "nerfstudio.engine.trainer", "nerfstudio 1.1.5 uses torch's old spelling"),
    KnownWarning("FutureWarning", r"`torch\.cuda\.amp\.custom_(fwd|bwd)\(args\.\.\.\)` is deprecated",
                 "nerfstudio.field_components.activations", "nerfstudio 1.1.5 uses torch's old spelling"),
    KnownWarning("FutureWarning", r"`torch\.jit\.script` is deprecated", "torch.jit._script",
                 "nerfstudio scripts its camera helpers at import (nerfstudio/cameras/camera_utils.py); "
                 "vision3d does not call torch.jit.script"),
)


def _category(name: str) -> type[Warning] | None:
    if name == "NumbaWarning":
        try:
            from numba.core.errors import NumbaWarning
        except ImportError:
            return None
        return NumbaWarning
    return {"UserWarning": UserWarning, "FutureWarning": FutureWarning}[name]


def hide_known_harmless() -> None:
    """Ignore each warning of :data:`KNOWN_HARMLESS`, raised by its module; all other warnings still show."""
    for known in KNOWN_HARMLESS:
        category = _category(known.category)
        if category is not None:
            warnings.filterwarnings("ignore", message=known.message, category=category,
                                    module=known.module.replace(".", r"\.") + r"\Z")


def is_our_command(argv0: str | None = None) -> bool:
    """Whether this process is ``v3d`` or an ``ns-*`` command (from its program name, ``sys.argv[0]``)."""
    name = Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else "")).name
    return name == "v3d" or name.startswith("ns-")


def hide_in_our_commands() -> None:
    """:func:`hide_known_harmless` when :func:`is_our_command`; nothing in a test or a notebook."""
    if is_our_command():
        hide_known_harmless()
