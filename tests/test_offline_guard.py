"""The no-network fixture itself must catch an outbound connection."""

import socket

import pytest


def test_outbound_connection_fails_the_test():
    with pytest.raises(RuntimeError, match="nothing may download"):
        socket.create_connection(("203.0.113.1", 80), timeout=0.1)


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=1)
    client.close()
    server.close()
