"""vision3d: recent 3D-vision methods for nerfstudio users, on GPU and CPU.

What exists: Gaussian splatting on our CPU rasterizer or gsplat (``ns-train vision3d-splat``), DET-GS
(``ns-train det-gs``), GeLoc3r relative pose regression (``v3d pose``) and E-MoFlow egomotion and optical
flow from events (``v3d flow``), with the data tools under ``v3d data``. HelixSurf, IR-NeRF and RoMaP are
planned.

Importing this package is cheap: it touches neither CUDA nor nerfstudio. Submodules
import their heavy dependencies themselves.
"""

__version__ = "0.1.0"
