"""vision3d: recent 3D-vision methods for nerfstudio users, on GPU and CPU.

What exists: Gaussian splatting on our CPU rasterizer or gsplat (``ns-train vision3d-splat``), DET-GS
(``ns-train det-gs``), nerfacto on our hash grid (``ns-train vision3d-nerfacto``; radiance and SDF fields in
``vision3d.fields``), GeLoc3r relative pose regression (``v3d pose``), E-MoFlow egomotion and optical flow
from events (``v3d flow``), mesh export from trained runs (``v3d export mesh``) and the data tools under
``v3d data``. Libraries for methods still being built: PatchMatch MVS (``vision3d.mvs``, for HelixSurf) and
3D-GALP part labels (``vision3d.methods.romap``). HelixSurf, IR-NeRF, RoMaP editing and the viewer panels
are planned.

Importing this package is cheap: it touches neither CUDA nor nerfstudio. Submodules
import their heavy dependencies themselves.
"""

__version__ = "0.1.0"
