"""``ns-train vision3d-nerfacto``: nerfstudio's nerfacto on vision3d's fields (CPU or GPU)."""
