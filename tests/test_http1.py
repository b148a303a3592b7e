"""The agent's HTTP/1.1 client (``node_agent/http1.py``) against real servers on loopback: asyncio servers that
write the bytes each test needs (framing, keep-alive, a close at the wrong time, silence, garbage)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from devstack.procs import free_port
from node_agent import http1
from node_agent.http1 import BodyTooLong, ConnectError, Disconnected, Http1Pool, ReadTimeout, Response

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
"""Serves one connection: its reader and writer, and the connection's number (0 for the first)."""

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (the client sends Content-Length bodies only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + (await reader.readexactly(length) if length else b"")


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()  # a connection ended
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        try:
            await self.handler(reader, writer, number)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went, or the test ended
        finally:
            writer.close()
            self.closed.set()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    def pool(self, read_timeout_s: float = 5.0) -> Http1Pool:
        return Http1Pool(self.url, connect_timeout_s=2.0, read_timeout_s=read_timeout_s)


def run(handler: Handler, scenario: Callable[[Server], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with Server(handler) as server:
            return await scenario(server)

    return asyncio.run(main())


def run_recording(answer: bytes, scenario: Callable[[Server], Awaitable[Any]]) -> Any:
    """``run`` with a server that answers every request on a connection with ``answer`` and records them."""

    async def main() -> Any:
        server = Server(None)  # type: ignore[arg-type]  # the handler needs the server: set just below

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
            while True:
                server.requests.append(await read_request(reader))
                writer.write(answer)
                await writer.drain()

        server.handler = handler
        async with server:
            return await scenario(server)

    return asyncio.run(main())


# ------------------------------------------------------------------ requests and bodies


def test_requests_reuse_one_kept_alive_connection_and_say_what_they_send() -> None:
    seen: list[Server] = []

    async def scenario(server: Server) -> list[Response]:
        seen.append(server)
        pool = server.pool()
        try:
            return [await pool.request("GET", "/health"), await pool.request("POST", "/v1/x", b'{"a":1}')]
        finally:
            await pool.aclose()

    responses = run_recording(OK, scenario)
    server = seen[0]
    assert responses == [Response(200, b"ok"), Response(200, b"ok")]
    assert server.connections == 1
    host = server.url.removeprefix("http://").encode()
    assert server.requests[0] == b"GET /health HTTP/1.1\r\nHost: %s\r\n\r\n" % host
    assert server.requests[1] == (
        b'POST /v1/x HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}' % host
    )


def test_a_path_prefix_of_the_base_url_goes_before_each_path() -> None:
    async def scenario(server: Server) -> bytes:
        pool = Http1Pool(server.url + "/prefix/", connect_timeout_s=2, read_timeout_s=2)
        await pool.request("GET", "/health")
        await pool.aclose()
        return server.requests[0].split(b"\r\n")[0]

    assert run_recording(OK, scenario) == b"GET /prefix/health HTTP/1.1"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"no", b"pe!"),
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nnope!",  # ended by the close
    ],
    ids=["content-length", "chunked", "until-close"],
)
def test_a_body_is_read_whole_however_it_is_framed(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(answer[:30])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(answer[30:])
        if b"Connection: close" in answer:
            writer.close()
            return
        await reader.read()

    async def scenario(server: Server) -> Response:
        pool = server.pool()
        try:
            return await pool.request("GET", "/x")
        finally:
            await pool.aclose()

    assert run(handler, scenario) == Response(404, b"nope!")


def test_a_connection_the_server_closes_after_its_answer_is_not_reused() -> None:
    async def scenario(server: Server) -> int:
        pool = server.pool()
        for _ in range(2):
            assert await pool.request("GET", "/x") == Response(200, b"ok")
        await pool.aclose()
        return server.connections

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")

    assert run(handler, scenario) == 2


def test_an_idle_connection_past_the_keep_alive_bound_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "KEEPALIVE_S", 0.05)

    async def scenario(server: Server) -> int:
        pool = server.pool()
        await pool.request("GET", "/x")
        await asyncio.sleep(0.1)
        await pool.request("GET", "/x")
        await pool.aclose()
        return server.connections

    assert run_recording(OK, scenario) == 2


# ------------------------------------------------------------------ streamed bodies


def test_a_sink_gets_the_body_as_it_arrives_and_the_answer_returns_when_it_wants_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http1, "DRAIN_S", 30.0)  # the body's end below comes late, but well within this
    pieces: list[bytes] = []
    ended = asyncio.Event()  # made in the test's loop: asyncio.run below

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (b"one ", b"two ", b"end"):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.8)  # the body's end comes well after what the sink wanted
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            ended.set()

    def sink(piece: bytes) -> bool:
        pieces.append(piece)
        return piece == b"end"

    async def scenario(server: Server) -> tuple[Response, float, int]:
        pool = server.pool()
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await pool.request("POST", "/v1/completions", b"{}", sink=sink)
        took = loop.time() - started
        await ended.wait()
        await asyncio.sleep(0.2)  # the client reads the end: the connection goes back to the pool
        await pool.request("POST", "/v1/completions", b"{}", sink=lambda piece: False)
        await pool.aclose()
        return response, took, server.connections

    response, took, connections = run(handler, scenario)
    assert response == Response(200)
    assert pieces == [b"one ", b"two ", b"end"]
    assert took < 0.7  # it did not wait for the body's end
    assert connections == 1


def test_a_body_not_ended_soon_after_the_sink_is_done_closes_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "DRAIN_S", 0.1)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndone\r\n")
        await writer.drain()
        await reader.read()  # never ends the body

    async def scenario(server: Server) -> tuple[Response, bool]:
        pool = server.pool()
        response = await pool.request("POST", "/x", b"{}", sink=lambda piece: piece == b"done")
        await asyncio.wait_for(server.closed.wait(), 2)  # the client closed it
        await pool.aclose()
        return response, server.closed.is_set()

    assert run(handler, scenario) == (Response(200), True)


def test_an_error_answer_to_a_streamed_request_is_collected_not_streamed() -> None:
    got: list[bytes] = []

    async def scenario(server: Server) -> Response:
        pool = server.pool()
        try:
            return await pool.request("POST", "/x", b"{}", sink=lambda piece: bool(got.append(piece)))
        finally:
            await pool.aclose()

    answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 7\r\n\r\nloading"
    assert run_recording(answer, scenario) == Response(503, b"loading")
    assert got == []


def test_what_the_sink_raises_fails_the_request_as_it_is_and_closes_the_connection() -> None:
    class Refused(Exception):
        pass

    def sink(piece: bytes) -> bool:
        raise Refused(piece.decode())

    async def scenario(server: Server) -> int:
        pool = server.pool()
        with pytest.raises(Refused, match="ok"):
            await pool.request("POST", "/x", b"{}", sink=sink)
        assert await pool.request("GET", "/x") == Response(200, b"ok")
        await pool.aclose()
        return server.connections

    assert run_recording(OK, scenario) == 2


def test_a_body_to_collect_past_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "MAX_BODY_BYTES", 10)

    async def scenario(server: Server) -> None:
        pool = server.pool()
        with pytest.raises(BodyTooLong, match="longer than 10 bytes"):
            await pool.request("GET", "/metrics")
        await pool.aclose()

    run_recording(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + b"x" * 11, scenario)


# ------------------------------------------------------------------ failures


def test_nothing_listening_is_a_connect_error() -> None:
    async def scenario() -> None:
        pool = Http1Pool(f"http://127.0.0.1:{free_port()}", connect_timeout_s=2, read_timeout_s=2)
        with pytest.raises(ConnectError, match="cannot connect"):
            await pool.request("GET", "/health")

    asyncio.run(scenario())


def test_a_silent_server_is_a_read_timeout_and_a_slow_one_is_not() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        if number == 0:
            await reader.read()  # says nothing
            return
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):  # a piece every 0.1 s: 1 s in all, never 0.6 s silent
            await asyncio.sleep(0.1)
            writer.write(b"1\r\n.\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await reader.read()

    async def scenario(server: Server) -> int:
        pool = server.pool(read_timeout_s=0.6)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeout, match=r"no data from the server for 0\.6 s"):
            await pool.request("GET", "/x")
        assert 0.55 < loop.time() - started < 3
        got: list[bytes] = []
        response = await pool.request("POST", "/x", b"{}", sink=lambda piece: bool(got.append(piece)))
        await pool.aclose()
        assert (response, b"".join(got)) == (Response(200), b"." * 10)
        return server.connections

    assert run(handler, scenario) == 2


def test_a_reused_connection_the_server_timed_out_is_replaced_unseen() -> None:
    """The server closes an idle connection just as the next request goes on it: the request goes again, on a
    new connection, and the caller sees only the answer."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        if number == 0:
            writer.write(OK)
            await writer.drain()
            await read_request(reader)  # the second request on this connection: closed unanswered
            return
        writer.write(OK)
        await writer.drain()
        await reader.read()

    async def scenario(server: Server) -> int:
        pool = server.pool()
        assert await pool.request("GET", "/x") == Response(200, b"ok")
        assert await pool.request("GET", "/x") == Response(200, b"ok")
        await pool.aclose()
        return server.connections

    assert run(handler, scenario) == 2


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", "connection closed after 0 bytes"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "connection closed after 44 bytes"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed response"),
        (b"not http at all\r\n\r\n", "malformed response"),
    ],
    ids=["closed-unanswered", "closed-mid-body", "bad-chunk", "not-http"],
)
def test_a_fresh_connection_closed_or_garbled_before_the_answer_ends_is_an_error(answer: bytes, error: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def scenario(server: Server) -> int:
        pool = server.pool()
        with pytest.raises(Disconnected, match=error):
            await pool.request("GET", "/x")
        await pool.aclose()
        return server.connections

    assert run(handler, scenario) == 1  # not tried again: a fresh connection's failure is the server's answer


def test_a_cancelled_request_closes_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n.\r\n")
        await writer.drain()
        await reader.read()  # returns when the client closes

    async def scenario(server: Server) -> bool:
        pool = server.pool()
        task = asyncio.create_task(pool.request("POST", "/x", b"{}", sink=lambda piece: False))
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.closed.wait(), 2)
        await pool.aclose()
        return server.closed.is_set()

    assert run(handler, scenario)


@pytest.mark.parametrize("url", ["https://127.0.0.1:8000", "http://", "127.0.0.1:8000", "http://h:8000/?q=1"])
def test_only_plain_http_urls_to_a_host_are_taken(url: str) -> None:
    with pytest.raises(ValueError, match=r"must be an http://host\[:port\] URL"):
        Http1Pool(url, connect_timeout_s=1, read_timeout_s=1)
