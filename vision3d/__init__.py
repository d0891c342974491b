"""vision3d: recent 3D-vision methods for nerfstudio users, on GPU and CPU.

What exists: Gaussian splatting on our CPU rasterizer or gsplat (``ns-train vision3d-splat``), nerfacto on our
hash grid (``ns-train vision3d-nerfacto``; radiance and SDF fields in ``vision3d.fields``), the methods DET-GS,
HelixSurf, IR-NeRF and RoMaP (``ns-train det-gs / helixsurf / ir-nerf / romap``), GeLoc3r relative pose
regression (``v3d pose``), E-MoFlow egomotion and optical flow from events (``v3d flow``), mesh export from
trained runs (``v3d export mesh``), the viewer's panels (``vision3d.viewer``) and the data tools under
``v3d data``.

Importing this package is cheap: it touches neither CUDA nor nerfstudio. Submodules
import their heavy dependencies themselves.
"""

__version__ = "0.1.0"
