"""The one guard behind "nothing downloads": refuse every connection and name lookup that leaves the machine.

:func:`refuse_network` patches ``socket.socket.connect``, ``socket.socket.connect_ex`` and
``socket.getaddrinfo`` (which ``socket.create_connection``, urllib, requests and torch.hub all go through)
so that a non-loopback address raises ``error``. Loopback and AF_UNIX sockets stay allowed: torch, the
nerfstudio viewer and multiprocessing talk to themselves through them. Guards nest; leaving one restores
what was there before it. Code outside Python (apt, Blender's own interpreter) is not covered.

Used around loading a user's local depth network (a hubconf may try to download), and by the tests,
which install it in the test process and, through ``tests/offline_children/sitecustomize.py``, in every
Python process they start (``v3d``, ``ns-train``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vision3d.errors import Vision3DError


class NetworkRefusedError(Vision3DError, RuntimeError):
    """Something tried to reach the network while the guard was on."""


def is_loopback(host) -> bool:
    """True for a host name or address that is this machine (None and "" bind locally)."""
    if host in (None, "", b"", "localhost", b"localhost"):
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def install(what: str, error: type[Exception] = NetworkRefusedError,
            hint: str = "nothing may download") -> Callable[[], None]:
    """Turn the guard on; returns the function that turns it off again.

    A refused call raises ``error("<what> tried to reach <address>; <hint>")``.
    """
    real = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def refuse(target):
        raise error(f"{what} tried to reach {target!r}; {hint}")

    def guarded(method):
        def connect(self, address):
            if self.family not in (socket.AF_INET, socket.AF_INET6) or is_loopback(address[0]):
                return method(self, address)
            refuse(address)

        return connect

    def getaddrinfo(host, *args, **kwargs):
        if not is_loopback(host):
            refuse(host)
        return real[2](host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = guarded(real[0]), guarded(real[1])
    socket.getaddrinfo = getaddrinfo

    def uninstall():
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = real

    return uninstall


@contextmanager
def refuse_network(what: str, error: type[Exception] = NetworkRefusedError,
                   hint: str = "nothing may download") -> Iterator[None]:
    """:func:`install` for the duration of a ``with`` block."""
    uninstall = install(what, error, hint)
    try:
        yield
    finally:
        uninstall()
