"""``make demo``: a prompt goes the way a user's does, through the API, on the local stack.

redis-server, the moto server (local AWS: S3, EC2, Cognito), llama-server with Gemma 3 270M and the local edge
(``python -m lambdas.local_api``) start; a user is created in the local Cognito pool; the node instance (in
moto) is stopped, as it is when nobody has used the service for a while. Then, as a user would:

    tl login --password        # USER_PASSWORD_AUTH against the local Cognito
    tl infer "…"               # POST /infer → the router starts the node → the text follows

When the router has started the instance, the node agent comes up (the demo's stand-in for the boot) and
serves the job with the real model; ``tl`` prints the text as it streams and the final reply with timings.

    python -m devstack.demo ["your prompt"] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from devstack.edge import DEMO_PASSWORD, DEMO_USER, LocalEdgeServer, create_user, create_user_pool, function_env
from devstack.procs import REPO, StackError, venv_tool, wait_until
from devstack.servers import LlamaServer
from devstack.stack import Stack

DEFAULT_PROMPT = "The three most useful things to know about running a language model on one small server are"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()

    workdir = REPO / ".tmp" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    print("starting the local stack: redis-server, moto (S3, EC2, Cognito), llama-server + Gemma 3 270M, local edge")
    with Stack(workdir) as stack:
        llama = LlamaServer(workdir / "llama")
        llama.start(wait=False)
        pool = create_user_pool(stack)
        create_user(stack, pool, DEMO_USER, DEMO_PASSWORD)
        edge = LocalEdgeServer(workdir / "edge", function_env(stack, pool))
        edge.start()
        try:
            ec2 = stack.ec2()
            ec2.stop_instances(InstanceIds=[stack.instance_id])
            ec2.get_waiter("instance_stopped").wait(InstanceIds=[stack.instance_id], WaiterConfig={"Delay": 1})
            print(f"API on {edge.url}; node {stack.instance_id} is stopped; user {DEMO_USER!r} in pool {pool.pool_id}")
            base = {k: v for k, v in os.environ.items() if not k.startswith(("TL_", "AWS_"))}
            env = {**base, **stack.moto.aws_env(), "TL_API_URL": edge.url, "TL_COGNITO_CLIENT_ID": pool.client_id,
                   "TL_TOKEN_FILE": str(workdir / "token.json"), "TL_PASSWORD": DEMO_PASSWORD}  # fmt: skip
            tl = venv_tool("tl")
            print(f"\n$ tl login --password --username {DEMO_USER}", flush=True)
            subprocess.run([tl, "login", "--password", "--username", DEMO_USER], env=env, check=True)
            print(f'\n$ tl infer "{args.prompt}" --max-tokens {args.max_tokens}', flush=True)
            run = subprocess.Popen([tl, "infer", args.prompt, "--max-tokens", str(args.max_tokens), "--poll", "0.25"],
                                   env=env)  # fmt: skip
            wait_until(lambda: stack.node_state() == "running", 30, "the router to start the node")
            time.sleep(2)  # let the "starting" state be seen, as a real boot takes a minute or more
            llama.wait_ready()
            stack.start_agent(llama.url, TL_MAX_CONCURRENCY="4")
            code = run.wait(timeout=180)
        except (StackError, subprocess.SubprocessError) as exc:
            print(f"demo failed: {exc}; logs in {workdir}", file=sys.stderr)
            return 1
        else:
            print(f"\nlogs of every process (edge access log included): {workdir}")
            return code
        finally:
            edge.stop()
            llama.stop()


if __name__ == "__main__":
    sys.exit(main())
