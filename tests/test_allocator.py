"""vision3d.allocator: glibc keeps freed memory, so a step that allocates the same large tensors again does not
fault their pages in anew; v3d and our trainer on CPU apply it, and a user's own setting wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vision3d.allocator import OPT_OUT, user_sets_malloc, without_malloc_settings

FAULTS_PER_64MB_TENSOR = """
import resource, sys
sys.argv = [{program!r}]
import vision3d.cli
import torch
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):  # until the heap holds a free block that fits (memalign asks a little more than the block freed)
    torch.ones(16 << 20)  # 64 MiB, freed at once
start = faults()
for _ in range(10):
    torch.ones(16 << 20)
print((faults() - start) / 10)
"""


def faults_per_tensor(program: str, **extra: str) -> float:
    """Minor page faults per 64 MiB tensor allocated and freed again, in a process whose ``sys.argv[0]`` is
    ``program`` when it imports ``vision3d.cli``."""
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_64MB_TENSOR.format(program=program)],
                         env={**without_malloc_settings(os.environ), **extra}, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")
def test_v3d_keeps_freed_memory_and_a_users_setting_wins():
    """glibc returns a freed 64 MiB block to the OS, so the next one faults its 16384 pages in again; in the v3d
    process, once the heap has grown to hold one, it is reused (measured: 16385 against 0). A process that only imports vision3d.cli (a test, a
    notebook) and a user's opt-out or own malloc tuning keep glibc's behaviour."""
    assert faults_per_tensor("/usr/local/bin/v3d") < 100
    assert faults_per_tensor("pytest") > 10000
    assert faults_per_tensor("/usr/local/bin/v3d", **{OPT_OUT: "system"}) > 10000
    assert faults_per_tensor("/usr/local/bin/v3d", GLIBC_TUNABLES="glibc.malloc.trim_threshold=100") > 10000


def test_a_users_malloc_settings_are_recognised():
    assert user_sets_malloc({OPT_OUT: "system"}) and user_sets_malloc({"MALLOC_TRIM_THRESHOLD_": "1"})
    assert user_sets_malloc({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"})
    assert not user_sets_malloc({}) and not user_sets_malloc({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX"})
    assert not user_sets_malloc({OPT_OUT: "keep", "MALLOC_ARENA_MAX": "2"})


def test_the_trainer_keeps_freed_memory_on_cpu(tmp_path, monkeypatch):
    """ns-train loads our trainer after torch, which is fine here (mallopt applies from the next allocation)."""
    import torch
    from scene_factory import write_scene

    from vision3d.methods import run, trainer
    from vision3d.methods.splat.config import vision3d_splat

    calls = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(True) or True)
    config = run.configure(vision3d_splat.config, write_scene(tmp_path / "scene", n_views=4), tmp_path / "out",
                           max_steps=1)
    run.train(config)
    assert calls == ([] if torch.cuda.is_available() else [True])
