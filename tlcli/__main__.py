"""tl — the tinyllama-shape command line.

  tl login                 log in through Cognito's hosted UI (browser; authorization code + PKCE)
  tl login --password      log in with user name and password (USER_PASSWORD_AUTH; scripts, tests)
  tl infer "prompt"        send a prompt, follow the node's start and the text, print the reply
  tl result ID             the status (and reply) of a job
  tl stop                  stop the node now
  tl ping                  is the API there?
  tl token                 print the saved ID token (for curl, playbooks/smoke.yml, playbooks/resize.yml)
  tl serve                 an OpenAI-compatible API on http://127.0.0.1:8765/v1 for the tools you already use

A login lasts 30 days: tl and tl serve renew the id token (an hour) themselves with the refresh token.

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

from tlcli.api import EXIT_JOB_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, Api, ApiError, Update, watch
from tlcli.serve import DEFAULT_PORT, Door
from tlcli.tokens import LoginError, Session, hosted_ui_login, load_token, password_login, save_token

__all__ = ["EXIT_JOB_FAILED", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "Api", "follow", "main"]


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
    try:
        return _follow(api, job_id, out, err, timeout_s=timeout_s, poll_s=poll_s)
    except ApiError as exc:
        print(str(exc), file=err)
        return exc.code


def _follow(api: Api, job_id: str, out: TextIO, err: TextIO, *, timeout_s: float, poll_s: float) -> int:
    last_status = ""
    for update in watch(api, job_id, timeout_s=timeout_s, poll_s=poll_s):
        if update.status == "unavailable":
            print(f"result not available yet ({update.data['code']}): {update.data.get('message', update.data)}; "
                  "asking again", file=err, flush=True)  # fmt: skip
            continue
        if update.status == "timeout":
            print(f"job {job_id} not finished after {timeout_s:.0f} s; ask again with `tl result {job_id}`", file=err)
            return EXIT_UNAVAILABLE
        if update.status != last_status and update.status in ("queued", "starting", "running"):
            print(f"[{update.elapsed_s:5.1f} s] {update.status}", file=err, flush=True)
        last_status = update.status
        if update.status in ("queued", "starting", "running"):
            out.write(update.new_text)
            out.flush()
            continue
        return finish(update, out, err)
    raise AssertionError("watch ends with a settled or a timeout update")  # pragma: no cover


def finish(update: Update, out: TextIO, err: TextIO) -> int:
    data = update.data
    reply = data.get("reply") or {}
    out.write(("\n" if update.restarted and update.new_text else "") + update.new_text + "\n")
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
    serve = sub.add_parser("serve", help="an OpenAI-compatible API on loopback (any API key)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--wait", type=float, default=300, help="seconds a request without stream waits (then 504)")
    serve.add_argument("--stream-timeout", type=float, default=900, help="seconds a stream follows its job")
    serve.add_argument("--poll", type=float, default=0.3, help="seconds between result polls")
    serve.add_argument("--client-id", default=os.environ.get("TL_COGNITO_CLIENT_ID"), help="for the GUI's sign-in")
    serve.add_argument("--domain", default=os.environ.get("TL_COGNITO_DOMAIN"), help="for the GUI's sign-in")
    return p


def login(args: argparse.Namespace, err: TextIO) -> int:
    if not args.client_id:
        print("set TL_COGNITO_CLIENT_ID (or --client-id): the Cognito app client id", file=err)
        return EXIT_USAGE
    if args.password:
        username = args.username or input("user name: ")
        password = os.environ.get("TL_PASSWORD") or getpass.getpass("password: ")
        tokens = password_login(args.client_id, username, password)
    else:
        if not args.domain:
            print("set TL_COGNITO_DOMAIN (or --domain): the hosted UI's https://… address", file=err)
            return EXIT_USAGE

        def show(url: str) -> None:
            print(f"log in at: {url}", file=err, flush=True)
            if not args.no_browser:
                webbrowser.open(url)

        tokens = hosted_ui_login(args.domain, args.client_id, open_browser=show, port=args.port)
    print(f"logged in; tokens saved in {save_token(tokens)} (renewed by tl itself for 30 days)", file=err)
    return EXIT_OK


def serve(api: Api, args: argparse.Namespace, err: TextIO) -> int:
    api.call("GET", "/ping")  # the API is there, and the session is (or says `run tl login`) before anything listens
    api.auth.token()  # type: ignore[union-attr]
    try:
        door = Door(api, args.port, wait_s=args.wait, stream_s=args.stream_timeout, poll_s=args.poll,
                    client_id=args.client_id, auth_domain=args.domain, log=err)  # fmt: skip
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}): choose another with --port", file=err)
        return EXIT_USAGE
    print(f"tl serve: OpenAI API at {door.url}/v1 (any API key) for {api.base}; the GUI at {door.gui_url}; "
          "Ctrl-C to stop", file=err, flush=True)  # fmt: skip
    door.serve()
    return EXIT_OK


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.command == "login":
        return login(args, err)
    if args.command == "token":
        print(load_token(), file=out)
        return EXIT_OK
    api = Api(args.api, None if args.command == "ping" else Session())
    if args.command == "serve":
        return serve(api, args, err)
    if args.command == "infer":
        body: dict[str, Any] = {"prompt": args.prompt}
        for name in ("max_tokens", "temperature", "idle_minutes"):
            if getattr(args, name) is not None:
                body[name] = getattr(args, name)
        return infer(api, body, out, err, timeout_s=args.timeout, poll_s=args.poll)
    job = getattr(args, "id", "")
    method, path, ok = {"ping": ("GET", "/ping", (200,)), "result": ("GET", f"/result/{job}", (200,)),
                        "stop": ("POST", "/stop", (200, 202))}[args.command]  # fmt: skip
    status, data, _ = api.call(method, path)
    print(json.dumps(data, indent=2 if args.command == "result" else None, ensure_ascii=False), file=out)
    return EXIT_OK if status in ok else EXIT_UNAVAILABLE


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
