"""``v3d export``: meshes from trained runs (thin over :func:`vision3d.export.from_run.export_run_mesh`)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def mesh(
    run: Path = typer.Argument(..., help="A run folder (with config.yml) or its config.yml."),
    output: Path = typer.Option(None, help="Mesh file (.ply, .obj or .glb); default RUN/mesh.ply."),
    voxel_size: float = typer.Option(None, help="TSDF voxel edge in scene-box units (default: box side / 512)."),
    truncation: float = typer.Option(None, help="TSDF truncation in scene-box units (default: 4 voxels)."),
    resolution: int = typer.Option(None, help="Along the box's longest side: SDF grid points (default 256) or "
                                   "TSDF voxels (default 512)."),
    min_accumulation: float = typer.Option(0.5, help="TSDF: pixels less opaque than this are background."),
    frame: str = typer.Option("world", help="'world': the scene's own frame (transforms.json); 'dataparser': "
                              "the model's frame, as ns-export."),
    gt: Path = typer.Option(None, help="Ground-truth mesh (scene frame): report Chamfer distance and F-score."),
    threshold: float = typer.Option(0.05, help="F-score distance threshold, in the ground-truth mesh's units."),
) -> None:
    """Mesh a trained run: marching cubes of its SDF, or TSDF fusion of its rendered depth and colour."""
    from vision3d.export.from_run import MeshExportConfig, export_run_mesh
    from vision3d.export.mesh_io import format_summary

    if frame not in ("world", "dataparser"):
        raise typer.BadParameter(f"{frame!r}: use 'world' or 'dataparser'", param_hint="--frame")
    for name, value in (("--voxel-size", voxel_size), ("--truncation", truncation), ("--resolution", resolution),
                        ("--threshold", threshold)):
        if value is not None and value <= 0:
            raise typer.BadParameter(f"{value}: must be positive", param_hint=name)
    options = MeshExportConfig(resolution=resolution, voxel_size=voxel_size, truncation=truncation,
                               min_accumulation=min_accumulation, frame=frame)
    result = export_run_mesh(run, output, options, gt_mesh=gt, threshold=threshold)
    typer.echo(f"wrote {result.path}: {format_summary(result.summary)}")
    if result.scores is not None:
        s = result.scores
        typer.echo(f"vs {gt}: Chamfer-L1 {s['chamfer_l1']:.4f} (accuracy {s['accuracy']:.4f}, completeness "
                   f"{s['completeness']:.4f}), F-score@{s['threshold']:g} {s['fscore']:.3f} "
                   f"(precision {s['precision']:.3f}, recall {s['recall']:.3f})")
