"""Which compiled kernels can run, decided per call from a tensor's device.

Every dispatch in vision3d asks this module, so there is one place that knows whether
CUDA, gsplat's compiled ops or tiny-cuda-nn are usable. Nothing here touches CUDA at
import time: the answers are computed on first use and cached.
"""

from __future__ import annotations

import functools
import importlib.util

import torch


@functools.cache
def cuda_available() -> bool:
    """True when torch sees at least one CUDA device."""
    return torch.cuda.is_available()


@functools.cache
def gsplat_available() -> bool:
    """True when gsplat's compiled CUDA extension loads (needs a GPU; gsplat has no CPU path)."""
    if not cuda_available() or importlib.util.find_spec("gsplat") is None:
        return False
    try:
        from gsplat.cuda import _backend  # noqa: PLC0415  (compiles or loads the extension)
    except Exception:  # noqa: BLE001  (a failed build means "not available", whatever the cause)
        return False
    return getattr(_backend, "_C", None) is not None


@functools.cache
def tcnn_available() -> bool:
    """True when tiny-cuda-nn imports (it raises without a GPU)."""
    if not cuda_available() or importlib.util.find_spec("tinycudann") is None:
        return False
    try:
        import tinycudann  # noqa: F401, PLC0415
    except Exception:  # noqa: BLE001
        return False
    return True


def _is_cuda(device: torch.device | str | torch.Tensor) -> bool:
    if isinstance(device, torch.Tensor):
        device = device.device
    return torch.device(device).type == "cuda"


def use_gsplat(device: torch.device | str | torch.Tensor) -> bool:
    """Whether a rasterization on this device should go to gsplat's CUDA kernels."""
    return _is_cuda(device) and gsplat_available()


def use_tcnn(device: torch.device | str | torch.Tensor) -> bool:
    """Whether a hash grid / MLP on this device should go to tiny-cuda-nn."""
    return _is_cuda(device) and tcnn_available()


def prefer_aten_cpu_convolutions() -> None:
    """Route CPU convolutions to ATen's kernels instead of oneDNN's.

    With inputs that require grad, oneDNN's backward of small grouped convolutions (SSIM's Gaussian
    windows, nerfstudio's image downscaling) is about 100x slower than ATen's in the torch build we pin:
    measured 13.7 ms vs 0.1 ms for a 3-channel 32x32 image and an 11-tap window. Our training runs on
    CPU call this once; CUDA is unaffected.
    """
    torch.backends.mkldnn.enabled = False


def default_device_type() -> str:
    """The device our method configs default to: ``"cuda"`` when present, else ``"cpu"``."""
    return "cuda" if cuda_available() else "cpu"


def describe() -> dict[str, bool | str]:
    """A summary for ``v3d --version``-style reports and bug reports."""
    return {
        "torch": torch.__version__,
        "cuda": cuda_available(),
        "gsplat_cuda_ops": gsplat_available(),
        "tinycudann": tcnn_available(),
        "default_device": default_device_type(),
    }


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when torch sees a GPU, else the CPU), ``"cpu"`` or ``"cuda[:N]"`` as a torch device.

    Raises ``ValueError`` for a name torch does not know and for a CUDA device on a machine without one.
    """
    if name == "auto":
        return torch.device(default_device_type())
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from err
    if device.type == "cuda" and not cuda_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU here (use auto or cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: only cpu and cuda are supported")
    return device
