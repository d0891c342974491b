"""The base of vision3d's user-facing errors: the ``v3d`` command prints these as one line, not a traceback."""


class Vision3DError(Exception):
    """Bad input or a missing resource; the message names the file (or thing) and the problem."""
