"""The no-network guard (``vision3d.offline``) catches an outbound connection in the test process, in the
Python processes the tests start, and apt downloads outside tests marked ``apt``."""

import socket
import subprocess
import sys

import pytest

from vision3d.offline import NetworkRefusedError, refuse_network

OUTBOUND = "import socket; socket.create_connection(('203.0.113.1', 80), timeout=0.1)"


def test_outbound_connection_fails_the_test():
    with pytest.raises(RuntimeError, match="nothing may download"):
        socket.create_connection(("203.0.113.1", 80), timeout=0.1)
    sock = socket.socket()
    with pytest.raises(RuntimeError, match="nothing may download"):
        sock.connect_ex(("203.0.113.1", 80))  # an address, no lookup: the connect itself is refused
    sock.close()


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=1)
    client.close()
    server.close()


def test_a_child_python_process_is_guarded_too():
    result = subprocess.run([sys.executable, "-c", OUTBOUND], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "NetworkRefusedError" in result.stderr and "nothing may download" in result.stderr, result.stderr
    loopback = ("import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); "
                "socket.create_connection(s.getsockname(), timeout=1).close()")
    assert subprocess.run([sys.executable, "-c", loopback], capture_output=True, timeout=60).returncode == 0


def test_guards_nest_and_leaving_one_restores_the_one_before():
    class Inner(Exception):
        pass

    with refuse_network("inner", Inner, "from disk only"):
        with pytest.raises(Inner, match="inner tried to reach '203.0.113.1'; from disk only"):
            socket.create_connection(("203.0.113.1", 80), timeout=0.1)
    with pytest.raises(NetworkRefusedError, match="test tried to reach"):
        socket.create_connection(("203.0.113.1", 80), timeout=0.1)


def test_apt_downloads_are_refused_outside_tests_marked_apt(tmp_path, monkeypatch):
    from vision3d.data.apt_data import AptUnavailableError, download_deb

    monkeypatch.setenv("VISION3D_CACHE", str(tmp_path))
    with pytest.raises(AptUnavailableError, match="VISION3D_OFFLINE is set: not downloading Debian package 'hello'"):
        download_deb("hello")
    (tmp_path / "apt" / "debs").mkdir(parents=True)
    cached = tmp_path / "apt" / "debs" / "hello_2.10-3_amd64.deb"
    cached.write_bytes(b"")
    assert download_deb("hello") == cached  # what is cached is used
