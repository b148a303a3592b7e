"""`tl` following a job through answers that say "not now": a real HTTP server on loopback answers GET /result
with 503 (the queue a moment away, as while the node boots) and 429 before the reply; `tl` waits them out and
prints the reply. A 404 still ends at once, and a server that never recovers ends at the timeout."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tlcli.__main__ import EXIT_OK, EXIT_UNAVAILABLE, Api, follow

DONE = {"status": "done", "reply": {"output": "red, green, blue", "usage": {"completion_tokens": 5},
                                    "model": "tinyllama", "timings": {}}}  # fmt: skip


class Script:
    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.asked = 0


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[tuple[Api, Script]]:
    script = Script(request.param)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = script.answers[min(script.asked, len(script.answers) - 1)]
            script.asked += 1
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Api(f"http://127.0.0.1:{server.server_address[1]}", "token"), script
    server.shutdown()


UNAVAILABLE = (503, {"message": "the job queue is unavailable; try again"})


@pytest.mark.parametrize("api", [[UNAVAILABLE, UNAVAILABLE, (429, {"message": "slow down"}), (200, DONE)]],
                         indirect=True)  # fmt: skip
def test_a_busy_api_is_waited_out_and_the_reply_printed(api: tuple[Api, Script]) -> None:
    client, script = api
    out, err = io.StringIO(), io.StringIO()
    assert follow(client, "job-1", out, err, timeout_s=30, poll_s=0.01) == EXIT_OK
    assert out.getvalue().strip() == "red, green, blue"
    assert script.asked == 4
    assert err.getvalue().count("result not available yet") == 3


@pytest.mark.parametrize("api", [[(404, {"message": "no such job"}), (200, DONE)]], indirect=True)
def test_an_unknown_job_ends_at_once(api: tuple[Api, Script]) -> None:
    client, script = api
    err = io.StringIO()
    assert follow(client, "job-2", io.StringIO(), err, timeout_s=30, poll_s=0.01) == EXIT_UNAVAILABLE
    assert script.asked == 1 and "result not available (404): no such job" in err.getvalue()


@pytest.mark.parametrize("api", [[UNAVAILABLE]], indirect=True)
def test_an_api_that_never_recovers_ends_at_the_timeout_saying_how_to_ask_again(api: tuple[Api, Script]) -> None:
    client, _ = api
    err = io.StringIO()
    assert follow(client, "job-3", io.StringIO(), err, timeout_s=1.5, poll_s=0.01) == EXIT_UNAVAILABLE
    assert "ask again with `tl result job-3`" in err.getvalue()
