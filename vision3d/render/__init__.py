"""Gaussian rasterization with gsplat 1.4's contract: gsplat on CUDA, our kernels on CPU.

``rasterize_gaussians`` is the one entry point; see :mod:`vision3d.render.rasterize`.
"""

from .rasterize import rasterize_gaussians

__all__ = ["rasterize_gaussians"]
