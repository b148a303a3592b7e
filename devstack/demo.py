"""``make demo``: the local stack end to end, with the real small model.

Starts redis-server, the moto server (local S3/EC2/CloudWatch), llama-server with Gemma 3 270M and the node
agent; enqueues a prompt through the job contract; follows the live text in ``reply:<id>``; prints the final
reply read back from S3 with its timings; stops everything.

    python -m devstack.demo ["your prompt"] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from typing import Any, cast

from devstack.procs import REPO, StackError
from devstack.servers import LlamaServer
from devstack.stack import BUCKET, Stack
from jobqueue import contract

DEFAULT_PROMPT = "The three most useful things to know about running a language model on one small server are"


def follow(stack: Stack, job_id: str, timeout_s: float) -> None:
    """Print the partial text as the agent streams it, until the job has a final status."""
    r = stack.redis.client()
    key, last = contract.reply_stream_key(job_id), "0-0"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        read = cast(list[Any], r.xread({key: last}, block=500))
        for _, entries in read or []:
            for entry_id, fields in entries:
                last = entry_id
                if "text" in fields:
                    print(fields["text"], end="", flush=True)
                if "status" in fields:
                    print()
                    return
    raise StackError(f"no final status for job {job_id} after {timeout_s:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()

    workdir = REPO / ".tmp" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    print("starting the local stack: redis-server, moto server (local AWS), llama-server + Gemma 3 270M, agent")
    with Stack(workdir) as stack:
        llama = LlamaServer(workdir / "llama")
        llama.start()
        try:
            stack.start_agent(llama.url, TL_MAX_CONCURRENCY="4")
            job = contract.new_job(args.prompt, "demo-user", max_tokens=args.max_tokens, temperature=0.7)
            stack.queue().enqueue(job)
            print(f"\njob {job['id']} queued (Redis {stack.redis.url}, key {contract.job_key(job['id'])})")
            print(f"\n--- live text from {contract.reply_stream_key(job['id'])} ---")
            print(args.prompt, end="", flush=True)
            follow(stack, job["id"], 120)
            reply = stack.wait_reply(job["id"], 30)
            print(f"\n--- final reply from s3://{BUCKET}/{job['reply_key']} (moto) ---")
            print(json.dumps(reply, indent=2, ensure_ascii=False))
            t = reply["timings"]
            print(
                f"\n{reply['status']}: {reply['usage'].get('completion_tokens', '?')} tokens from {reply['model']}; "
                f"queued {t['queued_ms']} ms, first token {t['ttft_ms']} ms, total {t['total_ms']} ms"
            )
            print(f"logs of every process: {workdir}")
            return 0 if reply["status"] == "done" else 1
        finally:
            llama.stop()


if __name__ == "__main__":
    sys.exit(main())
