"""Meshes from trained runs: marching cubes of SDFs, TSDF fusion of rendered depth, writers through trimesh.

- :mod:`.marching_cubes`: ``sdf_to_mesh(sdf, box, ...)`` for any SDF callable (points [N, 3] -> [N]), block by
  block in bounded memory, on the callable's device, optionally coloured.
- :mod:`.tsdf`: ``fuse_tsdf(views, box, ...)`` with open3d from rendered RGB + depth.
- :mod:`.from_run`: ``v3d export mesh RUN``'s work. A model offers an SDF by a method
  ``mesh_sdf() -> (sdf, colour or None)`` (callables as ``sdf_to_mesh`` takes, in the model's frame); models
  without one are rendered from their training cameras and fused.
- :mod:`.mesh_io`: .ply/.obj/.glb writers and the printed summary.
"""
