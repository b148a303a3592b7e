"""``make demo``: the whole path on this machine, and a prompt that goes the way a user's does.

The node is a systemd container converged with ``playbooks/site.yml`` and ``inventory/local.yml``; the AWS stacks
and the Lambdas are deployed into the local AWS (moto) by their playbooks; Redis runs beside it; the local edge
serves the HTTP API with the router (``devstack.fullstack`` has each step). Then the node is stopped, as it is when
nobody has used the service for a while, and, as a user would:

    tl login --password        # USER_PASSWORD_AUTH against the local Cognito
    tl infer "…"               # POST /infer → the router starts the node → the text follows

When the router has started the instance, the container boots as the instance would: systemd, supervisor,
llama-server with Gemma 3 270M and the agent, which claims the job. ``tl`` prints the text as it streams and the
final reply with its timings.

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
            boot_s = whole.boot_when_started()
            code = run.wait(timeout=300)
            steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in whole.timings.items())
            say(f"\nset-up: {steps}; the node's boot (container start to agent running): {boot_s:.1f} s")
    except (StackError, subprocess.SubprocessError) as exc:
        print(f"demo failed: {exc}\nlogs in {workdir}", file=sys.stderr)
        return 1
    say(f"logs of every process (the node's under node-logs/, the edge access log included): {workdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
