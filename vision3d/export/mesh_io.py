"""Write meshes as .ply, .obj or .glb through trimesh, and summarise them (vertices, faces, watertight, bounds).

Per-vertex colours travel in all three formats (PLY vertex colours, OBJ's ``v x y z r g b`` extension that
MeshLab and Blender read, glTF COLOR_0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from vision3d.errors import Vision3DError

MESH_FORMATS = (".ply", ".obj", ".glb")


def write_mesh(mesh: trimesh.Trimesh, path: Path | str) -> Path:
    """Write ``mesh`` to ``path``; the suffix picks the format (one of :data:`MESH_FORMATS`)."""
    path = Path(path)
    if path.suffix.lower() not in MESH_FORMATS:
        raise Vision3DError(f"{path}: unknown mesh format {path.suffix!r}; use one of {', '.join(MESH_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".obj":
        data = mesh.export(file_type="obj", include_color=True, include_texture=False, include_normals=False)
        path.write_text(data)
    else:
        mesh.export(path)
    return path


def mesh_summary(mesh: trimesh.Trimesh) -> dict:
    """Vertices, faces, watertight, and the bounds ``[[min x, y, z], [max x, y, z]]``."""
    return {
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "watertight": bool(mesh.is_watertight),
        "bounds": np.asarray(mesh.bounds).tolist() if len(mesh.vertices) else None,
    }


def format_summary(summary: dict) -> str:
    """One line for the terminal."""
    bounds = summary["bounds"]
    box = "empty" if bounds is None else " .. ".join("(" + ", ".join(f"{x:.3f}" for x in corner) + ")" for corner in bounds)
    return (f"{summary['vertices']} vertices, {summary['faces']} faces, "
            f"watertight: {'yes' if summary['watertight'] else 'no'}, bounds {box}")
