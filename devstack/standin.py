"""A stand-in OpenAI-compatible completions server with a fixed latency, for the benchmark and for tests
that need exact control over the backend (peak concurrency, an error chunk after HTTP 200).

It speaks the same wire format as vLLM: ``/health``, ``/v1/models``, ``/metrics`` with
``vllm:num_requests_running``/``waiting``, and ``/v1/completions`` and ``/v1/chat/completions`` streamed as SSE
ending in ``data: [DONE]`` (text chunks, or a chat's ``delta`` chunks). ``GET /stats`` reports the peak number of
requests it served at once and the last request's path and body.

A prompt containing ``[[error-chunk]]`` gets an ``error`` object as a ``data:`` chunk after HTTP 200, as vLLM
sends when the engine fails mid-stream; one containing ``[[html]]`` gets markup as its text (for the GUI's test
that text is shown as text).

    python -m devstack.standin --port 8000 --latency 0.5 --chunks 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

MODEL = "standin"


class StandIn:
    def __init__(self, latency_s: float, chunks: int) -> None:
        self.latency_s = latency_s
        self.chunks = max(chunks, 1)
        self.running = 0
        self.peak = 0
        self.served = 0
        self.last: dict[str, Any] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                method, path, body = request
                await self._route(writer, method, path, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
        line = await reader.readline()
        if not line:
            return None
        method, path, _ = line.decode().split(" ", 2)
        length = 0
        while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = await reader.readexactly(length) if length else b""
        return method, path, body

    async def _route(self, writer: asyncio.StreamWriter, method: str, path: str, body: bytes) -> None:
        if method == "GET" and path == "/health":
            await self._json(writer, {"status": "ok"})
        elif method == "GET" and path == "/v1/models":
            await self._json(writer, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        elif method == "GET" and path == "/stats":
            stats = {"peak": self.peak, "served": self.served, "running": self.running, "last": self.last}
            await self._json(writer, stats)
        elif method == "GET" and path == "/metrics":
            text = f"vllm:num_requests_running {self.running}\nvllm:num_requests_waiting 0\n"
            await self._send(writer, 200, "text/plain; version=0.0.4", text.encode())
        elif method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            self.last = {"path": path, "body": json.loads(body)}
            await self._complete(writer, self.last["body"], chat=path.endswith("/chat/completions"))
        else:
            await self._json(writer, {"error": {"message": f"no route {method} {path}"}}, status=404)

    async def _complete(self, writer: asyncio.StreamWriter, req: dict[str, Any], *, chat: bool) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            created = int(time.time())
            pause = self.latency_s / self.chunks
            asked = json.dumps(req.get("prompt") or req.get("messages"))
            for i in range(self.chunks):
                await asyncio.sleep(pause)
                if "[[error-chunk]]" in asked and i == 1:
                    await self._event(writer, {"error": {"message": "engine died", "type": "InternalServerError"}})
                    break
                last = i == self.chunks - 1
                finish = "length" if last else None
                piece = "<b>bold?</b>" if "[[html]]" in asked else f" tok{i}"
                if chat:
                    delta = {"content": piece, **({"role": "assistant"} if i == 0 else {})}
                    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
                else:
                    choice = {"index": 0, "text": piece, "finish_reason": finish}
                kind = "chat.completion.chunk" if chat else "text_completion"
                await self._event(writer, {"id": "cmpl-standin", "object": kind, "created": created,
                                           "model": MODEL, "choices": [choice]})  # fmt: skip
            else:
                usage = {"prompt_tokens": 4, "completion_tokens": self.chunks, "total_tokens": 4 + self.chunks}
                await self._event(writer, {"id": "cmpl-standin", "model": MODEL, "choices": [], "usage": usage})
            writer.write(self._chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()
            self.served += 1
        finally:
            self.running -= 1

    async def _event(self, writer: asyncio.StreamWriter, data: dict[str, Any]) -> None:
        writer.write(self._chunk(f"data: {json.dumps(data)}\n\n".encode()))
        await writer.drain()

    @staticmethod
    def _chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    async def _json(self, writer: asyncio.StreamWriter, data: dict[str, Any], status: int = 200) -> None:
        await self._send(writer, status, "application/json", json.dumps(data).encode())

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes) -> None:
        head = f"HTTP/1.1 {status} OK\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()


async def serve(port: int, latency_s: float, chunks: int) -> None:
    app = StandIn(latency_s, chunks)
    server = await asyncio.start_server(app.handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per completion")
    parser.add_argument("--chunks", type=int, default=8, help="streamed chunks per completion")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.latency, args.chunks))


if __name__ == "__main__":
    main()
