"""Imported at start-up by every Python process the tests start (conftest puts this folder first on their
PYTHONPATH): the same no-network guard as the test process, so ``v3d`` and ``ns-train`` cannot download."""

from vision3d.offline import install

install("a process started by the tests")
