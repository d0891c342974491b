"""Frames per second of nerfstudio's viewer on our methods, through its own render state machine.

For each method: a short run on the bundled scene (or ``--runs`` folders), then the viewer's action sequence of
a user who looks, drags the camera for ``--moves`` frames and lets go; prints per method and state the frame
size and the time per frame (render + colour map + JPEG into a viser scene, as ``ns-viewer`` does; the
browser's drawing is not included). The static (``high``) frame is at nerfstudio's default "Max res" 512.

    nice -n 15 python benchmarks/viewer.py --steps 30 --threads 1
"""

from __future__ import annotations

import argparse
import importlib
import math
import socket
import statistics
import tempfile
from pathlib import Path

import torch
import viser

from vision3d.data.bundled import bundled_scene_path
from vision3d.export.from_run import load_run
from vision3d.methods import run
from vision3d.viewer.frame_rate import DEFAULT_MAX_RES, orbit_camera_states, viewer_frames

METHODS = {
    "vision3d-splat": "vision3d.methods.splat.config:vision3d_splat",
    "det-gs": "vision3d.methods.det_gs.config:det_gs",
    "vision3d-nerfacto": "vision3d.methods.nerfacto.config:vision3d_nerfacto",
}


def train_run(method: str, out: Path, steps: int) -> Path:
    module, name = METHODS[method].split(":")
    spec = getattr(importlib.import_module(module), name)
    config = run.configure(spec.config, bundled_scene_path(), out / method, max_steps=steps, num_train_views=8)
    return run.train(config).base_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--runs", nargs="*", type=Path, default=None, help="run folders instead of training")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--moves", type=int, default=8)
    parser.add_argument("--max-res", type=int, default=DEFAULT_MAX_RES)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
    folders = args.runs or [train_run(m, Path(tempfile.mkdtemp()), args.steps) for m in args.methods]
    rows = []
    for folder in folders:
        loaded = load_run(folder)
        c2w = loaded.pipeline.datamanager.train_dataparser_outputs.cameras.camera_to_worlds[0]
        n = 2 + args.moves + 2
        states = orbit_camera_states(c2w, n, fov=math.radians(75), aspect=16 / 9)
        actions = ["static", "static"] + ["move"] * args.moves + ["static", "static"]
        # the first frame of each kind compiles kernels and fills caches: one of each first, untimed
        viewer_frames(loaded.pipeline.model, server.scene, states[:2], ["static", "move"], max_res=args.max_res)
        frames = viewer_frames(loaded.pipeline.model, server.scene, states, actions, max_res=args.max_res)
        for state in ("high", "low_move"):
            chosen = [f for f in frames if f.state == state]
            seconds = statistics.median(f.seconds for f in chosen)
            sizes = sorted({f"{f.width}x{f.height}" for f in chosen})
            rows.append((loaded.config.method_name, state, ",".join(sizes), len(chosen), seconds))
    print(f"\ntorch threads {torch.get_num_threads()}, device {'cuda' if torch.cuda.is_available() else 'cpu'}, "
          f"max res {args.max_res}, aspect 16:9")
    print("| method | state | frame (px) | frames | s/frame (median) | frames/s |")
    print("|---|---|---|---|---|---|")
    for method, state, size, count, seconds in rows:
        print(f"| {method} | {state} | {size} | {count} | {seconds:.3f} | {1 / seconds:.1f} |")
    server.stop()


if __name__ == "__main__":
    main()
