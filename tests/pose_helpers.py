"""Helpers shared by the pose, geometry-solver and event-fit tests (import them: ``from pose_helpers import one_thread``).

``one_thread`` is an autouse fixture: importing it into a test module applies it to every test there.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest single-threaded; on a shared 2-core machine more threads oversubscribe."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_room(tmp_path_factory, seed: int, width: int, height: int, n_views: int = 6):
    """A procedural room scene (nerfstudio folder) in a fresh temporary folder; for module-scoped fixtures."""
    from vision3d.pose.scenes import write_room_scene

    return write_room_scene(tmp_path_factory.mktemp("room") / "r", seed=seed, n_views=n_views, width=width,
                            height=height, supersample=1)
