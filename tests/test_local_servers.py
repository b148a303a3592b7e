"""The local stack's own plumbing: the ports its servers listen on, and a server that cannot start saying why."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path

import pytest

from devstack.procs import EPHEMERAL_PORTS, StackError, free_port
from devstack.servers import AWS_REGION, MotoServer, RedisServer


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


@pytest.mark.parametrize("keep_alive", [False, True], ids=["moto's own server", "keep-alive"])
def test_the_benchs_moto_keeps_a_connection_open_where_motos_own_server_closes_it(
    tmp_path: Path, keep_alive: bool
) -> None:
    """The agent's benchmark stores its replies through ``MotoServer(keep_alive=True)``, because S3 keeps a
    connection open for the next request (devstack/moto_keepalive.py): the same moto app, one connection for many
    requests. moto's own server, which the tests use, closes each connection after its answer."""
    moto = MotoServer(tmp_path, keep_alive=keep_alive)
    moto.start()
    try:
        connection = http.client.HTTPConnection(moto.host, moto.port, timeout=10)
        answers = []
        for _ in range(2):
            connection.request("GET", "/moto-api/data.json")
            response = connection.getresponse()
            answers.append((response.status, response.will_close))
            response.read()
        connection.close()
        s3 = moto.client("s3")
        s3.create_bucket(Bucket="tl-bench-replies", CreateBucketConfiguration={"LocationConstraint": AWS_REGION})
        s3.put_object(Bucket="tl-bench-replies", Key="k", Body=b"reply")
        assert s3.get_object(Bucket="tl-bench-replies", Key="k")["Body"].read() == b"reply"
    finally:
        moto.stop()
    assert answers == [(200, not keep_alive)] * 2
