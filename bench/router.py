"""Router benchmark (not a test): time spent in the router's handler per request, on the local stack (real
redis-server, moto server), with real RS256 tokens checked against a JWKS served over HTTP.

    python bench/router.py [--calls 2000] [--cold-calls 200]

* warm: ``POST /infer`` with a valid token while the node's heartbeat is present (token check, throttle, heartbeat
  read, enqueue: three Redis round trips, no AWS call);
* unauth: ``POST /infer`` without a token (the 401 path);
* cold: ``POST /infer`` with no heartbeat: the node is looked up in EC2 (moto) before the job is queued.

Targets: warm p95 ≤ 5 ms, 401 p95 ≤ 1 ms. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.procs import BlackHole
from devstack.stack import BUCKET, Stack
from jobqueue import contract
from jobqueue.inbox import SLOT_PREFIX, Inbox
from lambdas import package
from lambdas.router.app import Router
from tests.support import AUDIENCE, ISSUER, JwksServer, SigningKey, v2_event


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(router: Router, events: list[dict], between: int = 0, chore=None) -> list[float]:
    """Handler time of each event in ms; stdout (log and EMF lines) goes to /dev/null as it would to CloudWatch."""
    spent = []
    with Path(os.devnull).open("w") as sink, contextlib.redirect_stdout(sink):
        for n, event in enumerate(events):
            if between and chore and n % between == 0:
                chore()
            started = time.perf_counter()
            response = router.handle(event)
            spent.append((time.perf_counter() - started) * 1000)
            assert response["statusCode"] in (202, 401), response
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--cold-calls", type=int, default=200)
    parser.add_argument("--parked-calls", type=int, default=200)
    args = parser.parse_args()

    key = SigningKey("bench-key")
    jwks = JwksServer([key]).start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-router-"))
    print(f"local stack in {workdir}; signing {args.calls + args.cold_calls} tokens")
    with Stack(workdir) as stack:
        env = {"TL_REDIS_URL": stack.redis.url, "TL_JWKS_URL": jwks.url, "TL_JWT_ISSUER": ISSUER,
               "TL_JWT_AUDIENCE": AUDIENCE, "TL_REPLY_BUCKET": BUCKET, **stack.moto.aws_env()}  # fmt: skip
        os.environ.update(env)
        router = Router.from_env()
        r = stack.redis.client()

        def body(n: int) -> str:
            return json.dumps({"prompt": f"benchmark prompt number {n}", "max_tokens": 64})

        warm_events = [v2_event("POST", "/infer", body=body(n), token=key.token()) for n in range(args.calls)]
        cold_events = [v2_event("POST", "/infer", body=body(n), token=key.token()) for n in range(args.cold_calls)]
        unauth_events = [v2_event("POST", "/infer", body=body(n)) for n in range(args.calls)]

        def keep_queue_short() -> None:
            r.delete(contract.QUEUE_STREAM)
            r.set(contract.HEARTBEAT, json.dumps({"state": "ready"}), ex=600)

        keep_queue_short()
        timed(router, warm_events[:50])  # warm-up: JWKS read, script loading, connections
        warm = timed(router, warm_events, 500, keep_queue_short)
        unauth = timed(router, unauth_events)
        r.delete(contract.HEARTBEAT)
        cold = timed(router, cold_events, 100, lambda: r.delete(contract.QUEUE_STREAM))

        # The parked path: the node's Redis a black hole (connects time out, as to a stopped instance inside a
        # VPC), the request parked in S3 (moto). One user per call, so that the per-user cap is not what is timed.
        with BlackHole() as hole:
            os.environ["TL_REDIS_URL"] = hole.redis_url
            asleep = Router.from_env()
            parked_events = [
                v2_event("POST", "/infer", body=body(n), token=key.token()) for n in range(args.parked_calls)
            ]
            inbox_store = Inbox(stack.s3(), stack.bucket)

            def empty_inbox() -> None:
                for job_id in list(inbox_store.job_ids()):
                    inbox_store.remove(job_id, None)
                slots = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix=SLOT_PREFIX).get("Contents", [])
                for item in slots:
                    stack.s3().delete_object(Bucket=stack.bucket, Key=item["Key"])

            parked = timed(asleep, parked_events, 50, empty_inbox)

    jwks.stop()
    zip_path = package.build("router", workdir / "build", package.fetch_wheels(package.default_wheels()))
    figures = {
        "calls": args.calls,
        "warm_p50_ms": round(statistics.median(warm), 3),
        "warm_p95_ms": round(pct(warm, 0.95), 3),
        "unauth_p50_ms": round(statistics.median(unauth), 3),
        "unauth_p95_ms": round(pct(unauth, 0.95), 3),
        "cold_p50_ms": round(statistics.median(cold), 3),
        "cold_p95_ms": round(pct(cold, 0.95), 3),
        "parked_p50_ms": round(statistics.median(parked), 3),
        "parked_p95_ms": round(pct(parked, 0.95), 3),
        "router_zip_bytes": zip_path.stat().st_size,
    }
    figures["warm_target_met"] = figures["warm_p95_ms"] <= 5
    figures["unauth_target_met"] = figures["unauth_p95_ms"] <= 1
    figures["parked_target_met"] = figures["parked_p95_ms"] <= 300
    print(f"warm   /infer: p50 {figures['warm_p50_ms']} ms, p95 {figures['warm_p95_ms']} ms (target ≤ 5 ms)")
    print(f"401    /infer: p50 {figures['unauth_p50_ms']} ms, p95 {figures['unauth_p95_ms']} ms (target ≤ 1 ms)")
    print(f"cold   /infer: p50 {figures['cold_p50_ms']} ms, p95 {figures['cold_p95_ms']} ms (EC2 look-up on moto)")
    print(
        f"parked /infer: p50 {figures['parked_p50_ms']} ms, p95 {figures['parked_p95_ms']} ms (target ≤ 300 ms; "
        "Redis connect timeout 100 ms, then S3 on moto)"
    )
    print(f"router zip: {figures['router_zip_bytes']:,} bytes")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
