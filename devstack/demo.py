"""``make demo``: the whole path on this machine, and a prompt that goes the way a user's does.

The node is a systemd container converged with ``playbooks/site.yml`` and ``inventory/local.yml``, with the queue's
Redis on it (``aws_stack_queue: node``); the AWS stacks and the Lambdas are deployed into the local AWS (moto) by
their playbooks; the local edge serves the HTTP API with the router (``devstack.fullstack`` has each step). Then
the node is stopped, as it is when nobody has used the service for a while, and, as a user would:

    tl login --password        # USER_PASSWORD_AUTH against the local Cognito
    tl infer "…"               # POST /infer → parked in S3, the router starts the node → the text follows

The node's Redis does not answer, so the router parks the request in S3 (``inbox/``) and starts the instance; the
container then boots as the instance would: systemd, Redis, supervisor, llama-server with Gemma 3 270M and the
agent, which adopts the parked job into its queue and answers it. ``tl`` prints the text as it streams and the
final reply with its timings; the demo prints each step's evidence between.

Then ``tl serve`` starts on http://127.0.0.1:8765 (another port when that one is taken), the official ``openai``
client asks it for a chat completion, and the demo prints the address and that call, which works from any shell
while the stack is up. With ``DEMO_KEEP=1`` the stack stays up until Ctrl-C, with the GUI at
http://localhost:8765/ (sign in as the demo user through the stand-in hosted UI, ``devstack.authserver``).

    python -m devstack.demo ["your prompt"] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from devstack.authserver import AuthServer
from devstack.edge import DEMO_PASSWORD, DEMO_USER
from devstack.fullstack import FullStack
from devstack.procs import REPO, StackError, free_port, http_ok, venv_tool, wait_until
from tlcli.serve import DEFAULT_PORT

DEFAULT_PROMPT = "The three most useful things to know about running a language model on one small server are"


def say(line: str) -> None:
    print(line, flush=True)


OPENAI_EXAMPLE = """from openai import OpenAI
ai = OpenAI(base_url="{url}/v1", api_key="anything")
answer = ai.chat.completions.create(model="tinyllama-shape", max_tokens=48,
                                    messages=[{{"role": "user", "content": "Name three colours."}}])
print(answer.choices[0].message.content)"""


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def serve_openai(whole: FullStack, env: dict[str, str], *, keep: bool, say: Callable[[str], None]) -> str:
    """``tl serve`` for the stack, the ``openai`` client's call against it (its answer is returned), and with
    ``keep`` the stack held up for a person, with the GUI, until Ctrl-C."""
    from openai import OpenAI  # noqa: PLC0415 (a dev dependency, as the demo is)

    port = DEFAULT_PORT if port_free(DEFAULT_PORT) else free_port()
    url = f"http://127.0.0.1:{port}"
    log = (whole.workdir / "tl-serve.log").open("w")
    with AuthServer(whole.stack, whole.pool, callbacks=[f"http://localhost:{port}/callback"]) as hosted_ui:
        serve = subprocess.Popen([venv_tool("tl"), "serve", "--port", str(port)], stdout=log, stderr=log,
                                 env={**env, "TL_COGNITO_DOMAIN": hosted_ui.url})  # fmt: skip
        try:
            wait_until(lambda: serve.poll() is None and http_ok(f"{url}/v1/models"), 30, "tl serve")
            example = OPENAI_EXAMPLE.format(url=url)
            say(f"\n$ tl serve --port {port}    # the OpenAI API on loopback, for the tools you already use")
            say(f"\n$ python - <<'EOF'\n{example}\nEOF")
            ai = OpenAI(base_url=f"{url}/v1", api_key="anything", max_retries=0, timeout=300)
            question = [{"role": "user", "content": "Name three colours."}]
            answer = ai.chat.completions.create(model="tinyllama-shape", max_tokens=48, messages=question)  # type: ignore[arg-type]
            text = answer.choices[0].message.content or ""
            say(text)
            say(f"\ntl serve: {url}/v1 (OpenAI API, any key); the GUI: http://localhost:{port}/ "
                f"(sign in as {whole.user!r}, password {whole.password!r}); its log: {log.name}")  # fmt: skip
            if keep:
                say("DEMO_KEEP=1: the stack stays up; Ctrl-C stops it all")
                try:
                    serve.wait()
                except KeyboardInterrupt:
                    say("\nstopping")
            return text
        finally:
            serve.terminate()
            serve.wait(10)
            log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()

    workdir = REPO / ".tmp" / "demo"
    # Ctrl-C or a kill still takes the container and the servers down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    whole = FullStack(workdir, DEMO_USER, DEMO_PASSWORD, say=say)
    try:
        with whole:
            whole.stop_node()
            say(f"\nAPI on {whole.edge.url}; node {whole.stack.instance_id} is stopped (container shut down); "
                f"user {DEMO_USER!r}")  # fmt: skip
            env = whole.tl_env()
            tl = venv_tool("tl")
            say(f"\n$ tl login --password --username {DEMO_USER}")
            subprocess.run([tl, "login", "--password", "--username", DEMO_USER], env=env, check=True)
            say(f'\n$ tl infer "{args.prompt}" --max-tokens {args.max_tokens}')
            run = subprocess.Popen([tl, "infer", args.prompt, "--max-tokens", str(args.max_tokens), "--poll", "0.25"],
                                   env=env)  # fmt: skip
            boot = whole.boot_when_started()
            parked = ", ".join(f"inbox/{job_id}.json" for job_id in boot.parked) or "nothing"
            say(f"\n--- parked in S3 while the node slept: {parked}; the router started {whole.stack.instance_id}; "
                f"the container booted in {boot.seconds:.1f} s")  # fmt: skip
            code = run.wait(timeout=300)
            adopted = [line for line in whole.node_log("agent.log") if "parked job adopted" in line]
            say(f"\n--- the agent on the node: {adopted[-1] if adopted else 'no adoption logged'}; "
                f"parked now: {len(whole.parked())}")  # fmt: skip
            steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in whole.timings.items())
            say(f"\nset-up: {steps}; the node's boot (container start to agent running): {boot.seconds:.1f} s")
            if code == 0:
                serve_openai(whole, env, keep=os.environ.get("DEMO_KEEP") == "1", say=say)
    except (StackError, subprocess.SubprocessError, OSError) as exc:
        print(f"demo failed: {exc}\nlogs in {workdir}", file=sys.stderr)
        return 1
    say(f"logs of every process (the node's under node-logs/, the edge access log included): {workdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
