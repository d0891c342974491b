"""Shared fixtures: no network, paths to shared data, deterministic seeds."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail the test on any outbound connection, so a hidden download is caught."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded(method):
        def connect(self, address):
            if not _is_local(address):
                raise RuntimeError(f"test tried to open a network connection to {address!r}; nothing may download")
            return method(self, address)

        return connect

    monkeypatch.setattr(socket.socket, "connect", guarded(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(real_connect_ex))
    monkeypatch.setattr(
        socket, "getaddrinfo", _guarded_getaddrinfo(socket.getaddrinfo)
    )
    yield


def _guarded_getaddrinfo(real):
    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1") and not _is_local((host,)):
            raise RuntimeError(f"test tried to resolve {host!r}; nothing may download")
        return real(host, *args, **kwargs)

    return getaddrinfo


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the clone; tests that need it skip with the reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (CI keeps it beside the clone)")
    return SHARED_DATA
