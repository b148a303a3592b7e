"""tl — the tinyllama-shape command line.

  tl login                 log in through Cognito's hosted UI (browser; authorization code + PKCE)
  tl login --password      log in with user name and password (USER_PASSWORD_AUTH; scripts, tests)
  tl infer "prompt"        send a prompt, follow the node's start and the text, print the reply
  tl result ID             the status (and reply) of a job
  tl stop                  stop the node now
  tl ping                  is the API there?
  tl token                 print the saved ID token (for curl, playbooks/smoke.yml, playbooks/resize.yml)

Settings (flags win over the environment): TL_API_URL (default http://127.0.0.1:8080), TL_COGNITO_CLIENT_ID,
TL_COGNITO_DOMAIN (hosted UI, https://<prefix>.auth.<region>.amazoncognito.com), TL_USERNAME, TL_PASSWORD,
TL_TOKEN_FILE (default ~/.config/tinyllama-shape/token.json), AWS_REGION.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import webbrowser
from typing import Any, TextIO

import httpx

from tlcli.tokens import LoginError, hosted_ui_login, load_token, password_login, save_token

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
TRANSIENT = frozenset({429, 502, 503, 504})
"""Answers of GET /result that say "not now", not "never": waited out while a job is followed."""


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Api:
    def __init__(self, base_url: str, token: str | None, client: httpx.Client | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.http = client or httpx.Client(timeout=30)
        self.headers = {"authorization": f"Bearer {token}"} if token else {}

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any], httpx.Headers]:
        try:
            response = self.http.request(method, self.base + path, json=body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.base}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = {"message": response.text[:200]}
        if response.status_code in (401, 403):
            raise ApiError(response.status_code, f"{data.get('message', 'not allowed')}: run `tl login`", EXIT_USAGE)
        return response.status_code, data, response.headers


def infer(api: Api, body: dict[str, Any], out: TextIO, err: TextIO, *, timeout_s: float, poll_s: float) -> int:
    for _ in range(4):
        status, data, headers = api.call("POST", "/infer", body)
        if status != 429:  # noqa: PLR2004
            break
        wait = int(headers.get("retry-after", "5"))
        print(f"throttled: retrying in {wait} s", file=err, flush=True)
        time.sleep(wait)
    if status != 202:  # noqa: PLR2004
        print(f"refused ({status}): {data.get('message', data)}", file=err)
        return EXIT_USAGE if status < 500 else EXIT_UNAVAILABLE  # noqa: PLR2004
    job_id = data["id"]
    if data["status"] == "starting":
        print(f"job {job_id}: starting the node (about {data.get('eta', 90)} s)", file=err, flush=True)
    else:
        print(f"job {job_id}: queued", file=err, flush=True)
    return follow(api, job_id, out, err, timeout_s=timeout_s, poll_s=poll_s)


def follow(api: Api, job_id: str, out: TextIO, err: TextIO, *, timeout_s: float, poll_s: float) -> int:
    started = time.monotonic()
    shown = ""
    last_status = ""
    backoff = poll_s
    while time.monotonic() - started < timeout_s:
        code, data, headers = api.call("GET", f"/result/{job_id}")
        if code in TRANSIENT:
            # The job is safe (in Redis or parked in S3); the API could not say how it is right now — a node
            # booting, the queue a moment away, a throttle. Ask again, more slowly, until the timeout.
            print(f"result not available yet ({code}): {data.get('message', data)}; asking again", file=err, flush=True)
            backoff = min(max(backoff * 2, 0.5), 5.0)
            time.sleep(float(headers.get("retry-after", backoff)) if code == 429 else backoff)  # noqa: PLR2004
            continue
        backoff = poll_s
        if code != 200:  # noqa: PLR2004
            print(f"result not available ({code}): {data.get('message', data)}", file=err)
            return EXIT_UNAVAILABLE
        status = data["status"]
        if status != last_status and status in ("queued", "starting", "running"):
            print(f"[{time.monotonic() - started:5.1f} s] {status}", file=err, flush=True)
        last_status = status
        text = data.get("text", "")
        if status == "running" and text.startswith(shown):
            out.write(text[len(shown) :])
            out.flush()
            shown = text
        if status in ("done", "failed", "expired"):
            return finish(data, shown, out, err)
        time.sleep(poll_s)
    print(f"job {job_id} not finished after {timeout_s:.0f} s; ask again with `tl result {job_id}`", file=err)
    return EXIT_UNAVAILABLE


def finish(data: dict[str, Any], shown: str, out: TextIO, err: TextIO) -> int:
    reply = data.get("reply") or {}
    output = str(reply.get("output", ""))
    if output.startswith(shown):
        out.write(output[len(shown) :])
    else:
        out.write(("\n" if shown else "") + output)
    out.write("\n")
    out.flush()
    timings = reply.get("timings") or {}
    usage = reply.get("usage") or {}
    print(
        f"{data['status']}: {usage.get('completion_tokens', '?')} tokens from {reply.get('model', '?')}"
        + (f" on the {timings['shape']} shape" if timings.get("shape") else "")
        + "; "
        f"queued {timings.get('queued_ms')} ms, first token {timings.get('ttft_ms')} ms, "
        f"total {timings.get('total_ms')} ms" + (f"; error: {data['error']}" if data.get("error") else ""),
        file=err,
    )
    if data.get("url"):
        print(f"reply: {data['url']}", file=err)
    return EXIT_OK if data["status"] == "done" else EXIT_JOB_FAILED


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api", default=os.environ.get("TL_API_URL", "http://127.0.0.1:8080"))
    sub = p.add_subparsers(dest="command", required=True)
    login = sub.add_parser("login", help="log in and keep the id token")
    login.add_argument("--password", action="store_true", help="USER_PASSWORD_AUTH instead of the hosted UI")
    login.add_argument("--username", default=os.environ.get("TL_USERNAME"))
    login.add_argument("--client-id", default=os.environ.get("TL_COGNITO_CLIENT_ID"))
    login.add_argument("--domain", default=os.environ.get("TL_COGNITO_DOMAIN"))
    login.add_argument("--port", type=int, default=8765, help="local callback port (must be a callback URL)")
    login.add_argument("--no-browser", action="store_true", help="print the login URL instead of opening it")
    run = sub.add_parser("infer", help="send a prompt and print the reply")
    run.add_argument("prompt")
    run.add_argument("--max-tokens", type=int)
    run.add_argument("--temperature", type=float)
    run.add_argument("--idle-minutes", type=int)
    run.add_argument("--timeout", type=float, default=300)
    run.add_argument("--poll", type=float, default=0.5, help="seconds between result polls")
    result = sub.add_parser("result", help="status and reply of a job")
    result.add_argument("id")
    sub.add_parser("stop", help="stop the node now")
    sub.add_parser("ping", help="check that the API answers")
    sub.add_parser("token", help="print the saved id token (not expired), for scripts")
    return p


def login(args: argparse.Namespace, err: TextIO) -> int:
    if not args.client_id:
        print("set TL_COGNITO_CLIENT_ID (or --client-id): the Cognito app client id", file=err)
        return EXIT_USAGE
    if args.password:
        username = args.username or input("user name: ")
        password = os.environ.get("TL_PASSWORD") or getpass.getpass("password: ")
        token = password_login(args.client_id, username, password)
    else:
        if not args.domain:
            print("set TL_COGNITO_DOMAIN (or --domain): the hosted UI's https://… address", file=err)
            return EXIT_USAGE

        def show(url: str) -> None:
            print(f"log in at: {url}", file=err, flush=True)
            if not args.no_browser:
                webbrowser.open(url)

        token = hosted_ui_login(args.domain, args.client_id, open_browser=show, port=args.port)
    print(f"logged in; token saved in {save_token(token)}", file=err)
    return EXIT_OK


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.command == "login":
        return login(args, err)
    if args.command == "ping":
        status, data, _ = Api(args.api, None).call("GET", "/ping")
        print(json.dumps(data), file=out)
        return EXIT_OK if status == 200 else EXIT_UNAVAILABLE  # noqa: PLR2004
    if args.command == "token":
        print(load_token(), file=out)
        return EXIT_OK
    api = Api(args.api, load_token())
    if args.command == "infer":
        body: dict[str, Any] = {"prompt": args.prompt}
        for name in ("max_tokens", "temperature", "idle_minutes"):
            if getattr(args, name) is not None:
                body[name] = getattr(args, name)
        return infer(api, body, out, err, timeout_s=args.timeout, poll_s=args.poll)
    if args.command == "result":
        status, data, _ = api.call("GET", f"/result/{args.id}")
        print(json.dumps(data, indent=2, ensure_ascii=False), file=out)
        return EXIT_OK if status == 200 else EXIT_UNAVAILABLE  # noqa: PLR2004
    status, data, _ = api.call("POST", "/stop")
    print(json.dumps(data), file=out)
    return EXIT_OK if status in (200, 202) else EXIT_UNAVAILABLE


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args, out, err)
    except LoginError as exc:
        print(str(exc), file=err)
        return EXIT_USAGE
    except ApiError as exc:
        print(str(exc), file=err)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
