"""A stand-in for the Hugging Face Hub on loopback, serving the small GGUF the tests already use, so that the
node's fetch (``roles/inference/files/hub_model.py``) runs ``huggingface_hub`` for real through ``HF_ENDPOINT``.

It answers the calls that client makes: ``GET /api/models/<repo>[/revision/<rev>]`` (the commit and the files),
``GET /api/models/<repo>/tree/<rev>`` (a whole repository's files) and ``HEAD``/``GET
/<repo>/resolve/<commit or rev>/<file>`` with the headers it reads (``X-Repo-Commit``,
``X-Linked-Etag`` = the file's sha256 as the Hub gives it for LFS files, ``X-Linked-Size``). A gated repository
answers 401 with ``X-Error-Code: GatedRepo`` unless the request carries the token; anything else is a 404 with the
Hub's error codes. ``downloads`` counts the file bodies served.

    with HubServer({"org/model-GGUF": {"model.gguf": path}}, gated={"org/model-GGUF": "hf_secret"}) as hub:
        hub.url   # HF_ENDPOINT
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Final

COMMIT: Final = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self, repos: dict[str, dict[str, Path]], gated: dict[str, str] | None = None,
                 host: str = "127.0.0.1") -> None:  # fmt: skip
        self.repos = repos
        self.host = host
        self.gated = gated or {}
        self.downloads = 0
        self._sums = {
            (r, n): hashlib.sha256(p.read_bytes()).hexdigest() for r, f in repos.items() for n, p in f.items()
        }
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}"

    def sha256(self, repo: str, name: str) -> str:
        return self._sums[(repo, name)]

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _error(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, answer: object, *, body: bool) -> None:
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _answer(self, *, body: bool) -> None:  # noqa: PLR0911 (one return per answer of the Hub's)
                path = self.path.split("?", 1)[0]
                info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if info:
                    repo = info[1]
                    if repo not in hub.repos:
                        return self._error(404, "RepoNotFound", f"Repository not found: {repo}")
                    if (info[2] or "main") not in ("main", COMMIT):
                        return self._error(404, "RevisionNotFound", f"Invalid rev id: {info[2]}")
                    return self._json({"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                                       "gated": "manual" if repo in hub.gated else False,
                                       "siblings": [{"rfilename": n} for n in sorted(hub.repos[repo])]},
                                      body=body)  # fmt: skip
                tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
                if tree and tree[1] in hub.repos and tree[2] in ("main", COMMIT):
                    entries = []
                    for n, f in sorted(hub.repos[tree[1]].items()):
                        size, sha = f.stat().st_size, hub.sha256(tree[1], n)
                        lfs = {"oid": sha, "size": size, "pointerSize": 134}  # an LFS pointer file's usual size
                        entries.append({"type": "file", "path": n, "size": size, "oid": sha, "lfs": lfs})
                    return self._json(entries, body=body)
                resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not resolve or resolve[1] not in hub.repos:
                    return self._error(404, "RepoNotFound", f"Repository not found: {path}")
                repo, revision, name = resolve[1], resolve[2], resolve[3]
                token = hub.gated.get(repo)
                if token and self.headers.get("Authorization") != f"Bearer {token}":
                    return self._error(401, "GatedRepo", f"Access to model {repo} is restricted.")
                if revision not in ("main", COMMIT):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                if name not in hub.repos[repo]:
                    return self._error(404, "EntryNotFound", f"{name} does not exist on {revision}")
                file = hub.repos[repo][name]
                size = file.stat().st_size
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hub.sha256(repo, name)}"')
                self.send_header("X-Linked-Etag", f'"{hub.sha256(repo, name)}"')
                self.send_header("X-Linked-Size", str(size))
                self.send_header("Content-Length", str(size))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    hub.downloads += 1
                    with file.open("rb") as handle:
                        while block := handle.read(1 << 20):
                            self.wfile.write(block)
                return None

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
