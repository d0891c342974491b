"""``v3d data``: render, import and inspect scenes."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def info(scene: Path = typer.Argument(..., help="A scene folder with transforms.json, or the file itself.")) -> None:
    """Validate a scene and print its summary (views, resolution, depth, mesh)."""
    from rich.console import Console

    from vision3d.data.scene import load_scene

    Console().print(load_scene(scene).summary())


@app.command()
def render(
    model: str = typer.Argument(..., help="Model file (off/obj/ply/stl/glb/gltf/dae) or a known real mesh: "
                                "bunny, armadillo, dragon, elephant, cow, bull, duck (fetched with apt)."),
    out: Path = typer.Argument(..., help="Scene folder to write (transforms.json, images/, depths/, ...)."),
    path: str = typer.Option("orbit", help="Camera path: orbit, forward (LLFF-like) or walk (inside a room)."),
    views: int = typer.Option(24, help="Number of views."),
    res: str = typer.Option("128", help="Resolution: N for N×N, or WxH."),
    spp: int = typer.Option(32, help="Cycles samples per pixel."),
    hdri: str = typer.Option("forest", help="Blender HDRI (city, courtyard, forest, interior, night, studio, "
                             "sunrise, sunset) or an .exr path."),
    ground: str = typer.Option("brick", help="Photo for the ground/floor texture (scikit-image name or a "
                               "path), or 'none' for no ground plane."),
    texture: str = typer.Option("gravel", help="Photo box-projected on models that have no material, or 'none'."),
    seed: int = typer.Option(0, help="Seed of the path's phase and the HDRI's rotation."),
    fov: float = typer.Option(None, help="Horizontal field of view in degrees (default 40, walk 70)."),
    up: str = typer.Option(None, help="Up axis of an off/ply/stl file: y or z (default: y, or the registry's)."),
    mesh_max_faces: int = typer.Option(None, help="Decimate the written ground-truth model mesh to this many faces."),
    force: bool = typer.Option(False, help="Render again even if the folder holds this exact scene."),
    sparse_points: int = typer.Option(4000, help="SfM-like seed points to write as sparse_pc.ply (0: none)."),
    parts: str = typer.Option(None, help="Write part ids (part_ids/): models, objects, or slabs:K (the model cut "
                              "into K parts along its longest axis)."),
    extra_model: list[str] = typer.Option([], help="Another model set beside the first (repeat for more)."),
) -> None:
    """Render a real scene with Blender (Cycles, CPU) into nerfstudio's transforms.json format."""
    from vision3d.data.render import render_scene

    width, _, height = res.lower().partition("x")
    if not (width.isdigit() and (height == "" or height.isdigit())):
        raise typer.BadParameter(f"--res must be N or WxH, got {res!r}")
    scene = render_scene(model, out, path=path, views=views, width=int(width), height=int(height or width),
                         spp=spp, hdri=hdri, ground=ground, texture=texture, seed=seed, fov_deg=fov, up=up,
                         mesh_max_faces=mesh_max_faces, force=force, sparse_points=sparse_points, parts=parts,
                         extra_models=tuple(extra_model))
    typer.echo(f"scene written to {scene / 'transforms.json'}")


@app.command("fetch-mesh")
def fetch_mesh(
    name: str = typer.Argument(..., help="bunny, armadillo, dragon, elephant, cow, bull or duck."),
) -> None:
    """Fetch a real mesh from Debian (apt-get download, no install) and print its path, origin and licence."""
    from vision3d.data import apt_data

    path = apt_data.fetch_mesh(name)
    src = apt_data.MESHES[name]
    typer.echo(f"{path}\norigin: {src.origin}\nlicence: {src.licence}")


@app.command("import-visp")
def import_visp(
    out: Path = typer.Argument(..., help="Scene folder to write (transforms.json, images/, depths/)."),
    source: Path = typer.Option(None, help="A Castle-simu folder; default: fetched from Debian's visp-images-data."),
) -> None:
    """Import ViSP's Castle-simu (40 rendered frames, GT poses and depth) as a nerfstudio scene."""
    from vision3d.data.visp import import_castle_simu

    scene = import_castle_simu(out, source)
    typer.echo(f"scene written to {scene / 'transforms.json'}")
