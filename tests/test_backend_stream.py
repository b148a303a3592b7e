"""How the agent reads a streamed completion: the body as it arrives, split into SSE lines wherever the network
cut it. A real HTTP server on loopback sends each piece as its own write, a pause between, so that the agent
reads them one at a time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from aiohttp import web

from node_agent.backend import MAX_LINE_BYTES, Backend, BackendError, Completion


def event(text: str, finish: str | None = None) -> bytes:
    chunk = {"model": "m", "choices": [{"text": text, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def complete(pieces: list[bytes]) -> tuple[Completion, list[str]]:
    """Stream ``pieces`` from a local server, one write each, and read them as the agent does."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async def scenario() -> tuple[Completion, list[str]]:
        app = web.Application()
        app.router.add_post("/v1/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        backend = Backend(f"http://127.0.0.1:{port}", connect_timeout_s=5, read_timeout_s=5)
        texts: list[str] = []
        try:
            return await backend.complete("m", {"prompt": "hi"}, 16, on_text=texts.append), texts  # type: ignore[arg-type]
        finally:
            await backend.aclose()
            await runner.cleanup()

    return asyncio.run(scenario())


def split_everywhere(body: bytes, size: int) -> Iterator[bytes]:
    return (body[i : i + size] for i in range(0, len(body), size))


@pytest.mark.parametrize("size", [5, 64, 10_000])
def test_events_cut_anywhere_read_the_same(size: int) -> None:
    body = event(" Hello") + event(",") + event(" world", "length") + b"data: [DONE]\n\n"
    completion, texts = complete(list(split_everywhere(body, size)))
    assert (completion.text, completion.finish_reason, texts) == (" Hello, world", "length", [" Hello", ",", " world"])
    assert completion.ttft_s is not None


def test_crlf_lines_and_other_sse_fields_are_read() -> None:
    body = b": keep-alive\r\n\r\n" + event(" a").replace(b"\n", b"\r\n") + b"event: x\r\ndata: [DONE]\r\n\r\n"
    completion, texts = complete([body])
    assert (completion.text, texts) == (" a", [" a"])


def test_done_on_a_last_line_with_no_newline_ends_the_stream() -> None:
    completion, _ = complete([event(" a"), b"data: [DONE]"])
    assert completion.text == " a"


def test_a_stream_that_ends_before_done_and_finish_reason_is_a_retryable_error() -> None:
    with pytest.raises(BackendError, match="ended early after 2 characters") as caught:
        complete([event(" a")])
    assert caught.value.retryable


def test_a_stream_cut_in_the_middle_of_a_line_is_a_retryable_error() -> None:
    with pytest.raises(BackendError, match="not JSON") as caught:
        complete([event(" a"), b'data: {"choices": [{"te'])
    assert caught.value.retryable


def test_a_line_past_the_limit_is_refused_not_buffered() -> None:
    with pytest.raises(BackendError, match=f"longer than {MAX_LINE_BYTES} bytes") as caught:
        complete([event(" a"), b"data: " + b"x" * MAX_LINE_BYTES, b"x" * 10, b"\n\n"])
    assert not caught.value.retryable


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_stream_from_uvicorn_as_vllm_serves_it_is_read_and_the_connection_kept(http: str) -> None:
    """vLLM's OpenAI server runs on uvicorn (its HTTP parser httptools, or h11): a stream from an ASGI app there,
    chunked as uvicorn frames it, read by the agent's client; the next completion goes on the same connection, once
    the first one's body has ended (a request sent while it drains takes a new connection)."""
    import uvicorn  # noqa: PLC0415

    connections: set[tuple[str, int]] = set()
    body = event(" Hello") + event(" world", "stop") + b"data: [DONE]\n\n"

    async def app(scope: dict, receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        connections.add(scope["client"])
        await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                    "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
        for piece in split_everywhere(body, 40):
            await send({"type": "http.response.body", "body": piece, "more_body": True})  # type: ignore[operator]
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    async def scenario() -> list[Completion]:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, http=http, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110  # uvicorn has no event for it
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        backend = Backend(f"http://127.0.0.1:{port}", connect_timeout_s=5, read_timeout_s=5)
        try:
            first = await backend.complete("m", {"prompt": "hi"}, 16)  # type: ignore[arg-type]
            await asyncio.sleep(0.1)  # the next job: the body's last chunk, after [DONE], has come by then
            return [first, await backend.complete("m", {"prompt": "hi"}, 16)]  # type: ignore[arg-type]
        finally:
            await backend.aclose()
            server.should_exit = True
            await serving

    completions = asyncio.run(scenario())
    assert [(c.text, c.finish_reason) for c in completions] == [(" Hello world", "stop")] * 2
    assert len(connections) == 1
