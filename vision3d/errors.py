"""The base of vision3d's user-facing errors: the ``v3d`` command prints these as one line, not a traceback."""


class Vision3DError(Exception):
    """Bad input or a missing resource; the message names the file (or thing) and the problem."""


class CheckpointNotFoundError(Vision3DError, FileNotFoundError):
    """A weights or checkpoint file that is not there (vision3d never downloads one)."""


class CheckpointError(Vision3DError, ValueError):
    """A weights or checkpoint file that cannot be used: unreadable, another format, or shapes that do not fit."""
