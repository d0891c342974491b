"""The base of vision3d's user-facing errors: the ``v3d`` command prints these as one line, not a traceback."""


class Vision3DError(Exception):
    """Bad input or a missing resource; the message names the file (or thing) and the problem."""


class ConfigError(Vision3DError, ValueError):
    """A config field (an ``ns-train`` flag) with a value the method cannot use; the message names the field."""


class InputNotFoundError(Vision3DError, FileNotFoundError):
    """An input file or folder a run needs (part masks, a segmenter) that is not there; the message says which flag gives it."""


class CheckpointNotFoundError(Vision3DError, FileNotFoundError):
    """A weights or checkpoint file that is not there (vision3d never downloads one)."""


class CheckpointError(Vision3DError, ValueError):
    """A weights or checkpoint file that cannot be used: unreadable, another format, or shapes that do not fit."""


def one_line_errors_in_our_commands() -> None:
    """In ``ns-*`` commands (nerfstudio's, which load our method configs), print an uncaught Vision3DError as
    one line (``error: ...``, exit code 1) instead of a traceback, as ``v3d`` does; other errors are untouched."""
    import sys

    from vision3d.known_warnings import is_our_command

    if not is_our_command() or getattr(sys.excepthook, "vision3d_one_line", False):
        return
    previous = sys.excepthook

    def hook(kind, error, traceback):
        if isinstance(error, Vision3DError):
            print(f"error: {error}", file=sys.stderr)
        else:
            previous(kind, error, traceback)

    hook.vision3d_one_line = True
    sys.excepthook = hook
