"""vision3d: six recent 3D-vision methods for nerfstudio users, on GPU and CPU.

Importing this package is cheap: it touches neither CUDA nor nerfstudio. Submodules
import their heavy dependencies themselves.
"""

__version__ = "0.1.0"
