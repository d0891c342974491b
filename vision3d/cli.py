"""The ``v3d`` command: demo, data, bench, export, and the geometry modules (pose, flow).

Each subcommand group lives beside the code it drives (``vision3d/<part>/cli.py``) and
imports its heavy dependencies inside the command, so ``v3d --help`` starts fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vision3d.allocator import keep_freed_memory
from vision3d.known_warnings import hide_in_our_commands, is_our_command
from vision3d.openmp import short_openmp_spin

hide_in_our_commands()  # before the subcommands import nerfstudio (v3d only; a test importing this sees all)
if is_our_command():
    short_openmp_spin()  # before anything imports torch (see vision3d.openmp); not in a test or notebook
    keep_freed_memory()  # glibc keeps freed memory for the next step's tensors (see vision3d.allocator)

from vision3d.data.cli import app as data_app  # noqa: E402
from vision3d.events.cli import app as flow_app  # noqa: E402
from vision3d.export.cli import app as export_app  # noqa: E402
from vision3d.pose.cli import app as pose_app  # noqa: E402

app = typer.Typer(
    name="v3d",
    help="vision3d: recent 3D-vision methods for nerfstudio users, on GPU and CPU.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_app, name="data", help="Render, import and inspect scenes (nerfstudio transforms.json).")
app.add_typer(flow_app, name="flow", help="Egomotion and optical flow from events (E-MoFlow), event simulator, event files.")
app.add_typer(export_app, name="export", help="Meshes from trained runs: marching cubes of SDFs, TSDF fusion of rendered depth.")
app.add_typer(pose_app, name="pose", help="GeLoc3r relative pose: train, eval (AUC@5/10/20 as ReLoc3r), predict.")


@app.command()
def info() -> None:
    """Print versions and which compiled backends (CUDA, gsplat, tiny-cuda-nn) can run here."""
    from rich.console import Console
    from rich.table import Table

    from vision3d import __version__, backends

    table = Table(title=f"vision3d {__version__}")
    table.add_column("component")
    table.add_column("status")
    for key, value in backends.describe().items():
        table.add_row(key, str(value))
    Console().print(table)


@app.command()
def demo(
    output: str = typer.Option("outputs/demo", help="Folder for the demo's pictures and numbers."),
    steps: int = typer.Option(None, help="Training steps (default 1500; det-gs: 800 per variant)."),
    method: str = typer.Option("vision3d-splat", help="nerfstudio method to train (one of ours); det-gs runs the "
                               "sparse-view comparison, base splats vs det-gs."),
    train_views: int = typer.Option(8, help="Training views of the det-gs comparison (the rest are held out)."),
) -> None:
    """Train on the bundled scene and evaluate held-out views (no Blender, no GPU, no download needed)."""
    from vision3d.demo import run_demo, run_sparse_demo

    if steps is not None and steps < 1:
        raise typer.BadParameter(f"{steps} steps: give at least 1", param_hint="--steps")
    if train_views < 1:
        raise typer.BadParameter(f"{train_views} views: give at least 1", param_hint="--train-views")
    if method == "det-gs":
        run_sparse_demo(output, steps=steps or 800, train_views=train_views)
    else:
        run_demo(output, steps=steps or 1500, method=method)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    method: str = typer.Argument(..., help="One of our ns-train methods, e.g. det-gs."),
    preset: str = typer.Option(..., help="A preset name from vision3d/configs/METHOD/ (e.g. sparse-3view) or a .yaml path."),
    data: Path = typer.Option(..., help="Scene folder (nerfstudio transforms.json)."),
    dry_run: bool = typer.Option(False, help="Only print the ns-train command."),
) -> None:
    """Run ns-train with a preset; extra arguments go to ns-train (e.g. --vis viewer).

    A scene with a transforms.json (or any scene for our ``vision3d-data`` parser) is validated first, so
    that a missing or corrupt file fails here in one line rather than in ns-train's traceback.
    """
    import shlex
    import subprocess

    from vision3d.data.scene import SceneError, load_scene
    from vision3d.methods.presets import find_preset, ns_train_command

    command = ns_train_command(method, find_preset(method, preset), data, ctx.args)
    if not data.exists():
        raise SceneError(f"{data}: no such scene folder")
    if data.suffix == ".json" or (data / "transforms.json").is_file() or "vision3d-data" in command:
        load_scene(data)
    typer.echo(shlex.join(command))
    if not dry_run:
        raise SystemExit(subprocess.call(command))


@app.command()
def bench(
    name: str = typer.Argument("all", help="Benchmark script in benchmarks/ (without .py), or 'all'."),
) -> None:
    """Run the benchmark scripts in benchmarks/; each prints a measured table."""
    from vision3d.bench import run_benchmarks

    run_benchmarks(name)


def main() -> None:
    """Entry point: user-facing errors (bad files, missing tools or weights) print as one line, exit code 1."""
    from vision3d.errors import Vision3DError

    try:
        app()
    except Vision3DError as err:
        typer.secho(f"error: {err}", err=True, fg="red")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
