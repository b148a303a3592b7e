"""The local stack's own plumbing: the ports its servers listen on, and a server that cannot start saying why."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devstack.procs import EPHEMERAL_PORTS, StackError, free_port
from devstack.servers import RedisServer


def test_free_ports_are_outside_the_range_outgoing_connections_take() -> None:
    low, high = (int(n) for n in EPHEMERAL_PORTS.read_text().split())
    ports = {free_port() for _ in range(50)}
    assert len(ports) > 1
    for port in ports:
        assert not low <= port <= high, port
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # and free


@pytest.mark.slow
def test_a_redis_server_whose_port_is_taken_fails_at_once_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        server = RedisServer(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(StackError, match="Address already in use"):
            server.start()
        server.stop()
