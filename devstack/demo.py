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

    python -m devstack.demo ["your prompt"] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

from devstack.edge import DEMO_PASSWORD, DEMO_USER
from devstack.fullstack import FullStack
from devstack.procs import REPO, StackError, venv_tool

DEFAULT_PROMPT = "The three most useful things to know about running a language model on one small server are"


def say(line: str) -> None:
    print(line, flush=True)


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
    except (StackError, subprocess.SubprocessError) as exc:
        print(f"demo failed: {exc}\nlogs in {workdir}", file=sys.stderr)
        return 1
    say(f"logs of every process (the node's under node-logs/, the edge access log included): {workdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
