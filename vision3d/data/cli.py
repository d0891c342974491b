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
