"""The commit a benchmark's table was measured at, which its header prints (docs cite tables by it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """Short hash of the checkout's HEAD, with ``+dirty`` when ``vision3d/`` or ``benchmarks/`` differ from it (the
    table then measured code no commit holds); ``?`` outside a git checkout. Runs git in the checkout, not the
    working directory, so a benchmark started from elsewhere names the right commit."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "?"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "vision3d", "benchmarks"],
                           capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")
