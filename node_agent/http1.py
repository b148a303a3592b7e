"""HTTP/1.1 to the model server on loopback: the agent's client for vLLM's and llama-server's OpenAI API
(``node_agent/backend.py``), on kept-alive connections.

Why a client of its own: a streamed completion arrives one token at a time, a read each, and aiohttp's client
wakes the job's task for every read (its stream reader, and a read timer armed again each time). Here the body is
handed to the caller's ``sink`` from the connection's ``data_received``, so a token costs a parse and no task
switch: a completion of eight tokens, 32 at a time, cost 0.45 ms of CPU against 0.88 through aiohttp
(docs/development.md). The parsing is httptools' (llhttp, Node.js's HTTP parser, which uvicorn uses too): the
status line, the headers, and a body framed by ``Content-Length``, chunked, or ended by the server's close.

Scope, all the agent needs and no more: plain HTTP to one host and port (the model server listens on
127.0.0.1:8000), GET and POST, no redirects, proxies or TLS. The reply's PUT to S3 keeps aiohttp
(``node_agent/s3.py``).

- **Timeouts**: connecting, ``connect_timeout_s``; then no byte from the server for ``read_timeout_s`` fails the
  exchange (one timer an exchange, pushed back by the reads it finds when it fires, not re-armed by each read).
- **Keep-alive**: a connection whose response ended and that the server keeps open goes back to the pool, and is
  reused while it has been idle less than ``KEEPALIVE_S``; one still reading the end of a body its sink no longer
  wants goes back once that end came (within ``DRAIN_S``, or it is closed). A reused connection that the server
  closed before answering (it timed the connection out just as the request went) costs nothing: the request goes
  on the next connection, or a new one.
- **Errors** are ``HttpError``: ``ConnectError`` (no connection), ``ReadTimeout``, ``Disconnected`` (closed or
  malformed before the response ended), ``BodyTooLong``; an exception the ``sink`` raises fails the exchange with
  it, as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

KEEPALIVE_S: Final = 4.0
"""How long an idle connection is reused: under the 5 s after which the servers close one (uvicorn's
``--timeout-keep-alive`` default, which vLLM keeps; cpp-httplib's ``CPPHTTPLIB_KEEPALIVE_TIMEOUT_SECOND``,
llama-server's)."""
DRAIN_S: Final = 1.0
"""How long the end of a body the sink no longer wants may take before its connection is closed instead of reused
(the servers end the body right after ``data: [DONE]``)."""
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
"""The longest body collected whole (``/metrics``, ``/v1/models``, an error's detail); a stream has no limit here."""

Sink = Callable[[bytes], bool]
"""Takes each piece of a 2xx body as it arrives; returns True once it wants no more (the rest is read and dropped)."""


class HttpError(Exception):
    """The exchange did not complete."""


class ConnectError(HttpError):
    """No connection: refused, unreachable, or not made within the connect timeout."""


class ReadTimeout(HttpError):
    """No byte from the server for the read timeout."""


class Disconnected(HttpError):
    """The connection closed, or the response was malformed, before the response ended."""


class BodyTooLong(HttpError):
    """A body to collect whole was longer than ``MAX_BODY_BYTES``."""


class _Stale(Disconnected):
    """A reused connection closed before any byte of the answer: the server had timed it out."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    """The body, when collected: a non-2xx answer's, or any answer's when the request had no sink."""


class _Connection(asyncio.Protocol):
    """One connection and, at a time, one exchange on it. httptools calls the ``on_*`` methods from ``feed_data``."""

    def __init__(self, pool: Http1Pool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False  # taken from the pool, not made for this exchange
        self.idle_since = 0.0
        # the exchange in progress
        self._waiter: asyncio.Future[Response] | None = None
        self._sink: Sink | None = None
        self._streaming = False  # the body goes to the sink (a 2xx answer to a request with a sink)
        self._body: list[bytes] = []
        self._size = 0
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the body does not end with the connection
        self._received = 0
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- the exchange

    def exchange(self, request: bytes, sink: Sink | None) -> asyncio.Future[Response]:
        if self._transport is None or self._waiter is not None:
            raise RuntimeError("the connection is not ready for an exchange")
        self._waiter = self._loop.create_future()
        self._sink = sink
        self._streaming = False
        self._body = []
        self._size = self._received = 0
        self._headers_done = self._framed = False
        self._last_read = self._loop.time()
        self._timer = self._loop.call_later(self._pool.read_timeout_s, self._check_reads)
        self._transport.write(request)
        return self._waiter

    def _check_reads(self) -> None:
        silent = self._loop.time() - self._last_read
        if silent >= self._pool.read_timeout_s:
            self._fail(ReadTimeout(f"no data from the server for {self._pool.read_timeout_s:g} s"))
        else:
            self._timer = self._loop.call_later(self._pool.read_timeout_s - silent, self._check_reads)

    def _fail(self, exc: BaseException) -> None:
        """End the exchange with ``exc`` and the connection with it (its response was not read to the end)."""
        waiter = self._waiter
        self._end_exchange()
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _end_exchange(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiter = None
        self._sink = None

    def _drain_expired(self) -> None:
        if self._waiter is not None and self._waiter.done():  # still draining the body nobody wants
            self._end_exchange()
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()
            self._pool.forget(self)

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing asked: a server that talks out of turn cannot be trusted with the next
            self.close()
            return
        self._last_read = self._loop.time()
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # the sink's own error, raised in on_body
            self._fail(exc.__context__ or exc)
        except httptools.HttpParserError as exc:
            self._fail(Disconnected(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        waiter = self._waiter
        if waiter is None or waiter.done():  # idle, or draining a body nobody wants
            self._end_exchange()
        elif self._headers_done and not self._framed:  # a body that the server ends by closing
            self.on_message_complete()
        elif self.reused and self._received == 0:
            self._fail(_Stale("the server closed the idle connection"))
        else:
            self._fail(Disconnected(f"connection closed after {self._received} bytes of the response"))

    # -------------------------------------------------------------- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._streaming = self._sink is not None and 200 <= self._parser.get_status_code() < 300  # noqa: PLR2004

    def on_body(self, piece: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # draining
        sink = self._sink
        if self._streaming and sink is not None:
            if sink(piece):
                waiter.set_result(Response(self._parser.get_status_code()))
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self._loop.call_later(DRAIN_S, self._drain_expired)
            return
        self._size += len(piece)
        if self._size > MAX_BODY_BYTES:
            raise BodyTooLong(f"response body longer than {MAX_BODY_BYTES} bytes")
        self._body.append(piece)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        status = self._parser.get_status_code()
        keep = self._parser.should_keep_alive() and not self.closed
        body = b"".join(self._body)
        self._end_exchange()
        if keep:
            self._pool.release(self)
        else:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(status, body))


def split_url(base_url: str) -> tuple[str, int, str]:
    """The host, port and path prefix of an ``http://host[:port][/path]`` URL; ValueError with the reason."""
    try:
        parts = urlsplit(base_url)
        port = parts.port or 80
    except ValueError as exc:
        raise ValueError(f"must be an http://host[:port] URL: {exc}") from None
    if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("must be an http://host[:port] URL (plain HTTP, no query)")
    return parts.hostname, port, parts.path.rstrip("/")


class Http1Pool:
    """Requests to one ``http://host:port`` on a pool of kept-alive connections, one exchange a connection at a
    time, as many connections as requests in flight (the agent caps those itself: ``TL_MAX_CONCURRENCY``)."""

    def __init__(self, base_url: str, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        self.host, self.port, self.prefix = split_url(base_url)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._host_header = urlsplit(base_url).netloc.encode("ascii")
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    async def request(self, method: str, path: str, body: bytes | None = None, sink: Sink | None = None) -> Response:
        """Send a request and return its answer: with a ``sink``, a 2xx body goes to it as it arrives and the
        answer returns once the body ended or the sink wanted no more; any other body is collected."""
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), (self.prefix + path).encode(), self._host_header)
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        request = head + b"\r\n" + (body or b"")
        while True:
            connection = self._take() or await self._connect()
            try:
                return await connection.exchange(request, sink)
            except _Stale:
                continue  # only a reused connection's error: the next one, or a new one
            except BaseException:
                connection.close()  # cancelled, or failed: its response was not read to the end
                raise

    def _take(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_S:
                connection.reused = True
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except TimeoutError:
            raise ConnectError(f"no connection to {self.host}:{self.port} in {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self._all.add(connection)
        return connection

    def release(self, connection: _Connection) -> None:
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        self._all.discard(connection)

    async def aclose(self) -> None:
        for connection in list(self._all):
            connection.close()
        self._idle.clear()
