"""``tl-node-agent``: read the settings, build the parts, run the agent until SIGTERM."""

from __future__ import annotations

import logging
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import redis.asyncio
import uvloop
from botocore.config import Config

from jobqueue.inbox import Inbox
from jobqueue.queue import AsyncJobQueue
from node_agent import logs
from node_agent.adoption import Adopter
from node_agent.agent import Agent
from node_agent.backend import Backend
from node_agent.instance import Identity, InstanceError, Stopper, imds_identity
from node_agent.metrics import CloudWatchPublisher, Metrics
from node_agent.replies import ReplyStore
from node_agent.s3 import SignedS3
from node_agent.settings import Settings, SettingsError
from node_agent.shape import SHAPE_ENV, read_env_file

log = logging.getLogger("node_agent")
AWS_THREADS = 4


async def identify(settings: Settings) -> Identity:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if settings.instance_id:
        return Identity(settings.instance_id, region)
    try:
        found = await imds_identity()
    except InstanceError:
        if settings.stop_mode != "dry-run":
            raise
        name = f"local-{socket.gethostname()}"
        log.warning("no instance metadata; dry run continues as a local node", extra={"instance_id": name})
        return Identity(name, region)
    return Identity(found.instance_id, region or found.region)


async def amain(settings: Settings) -> None:
    identity = await identify(settings)
    # Few threads for the AWS calls left to boto3 (the inbox, CloudWatch, the stop, credentials): each holds the
    # GIL for botocore's milliseconds of CPU while the event loop streams the jobs (measured with bench/agent.py).
    workers = AWS_THREADS
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aws")
    aws = Config(
        region_name=identity.region,
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=workers,
        connect_timeout=5,
        read_timeout=15,
    )
    # The bucket's objects are small JSON documents with fixed parameters: botocore's client-side parameter
    # validation and default CRC checksums cost ~1 ms of CPU per call and guard nothing here; TLS does.
    s3_config = aws.merge(
        Config(
            parameter_validation=False,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
    )
    metrics = Metrics()
    metrics.serve(settings.metrics_port)
    session = boto3.Session()
    cloudwatch = session.client("cloudwatch", config=aws) if settings.cloudwatch else None
    queue = AsyncJobQueue(
        redis.asyncio.from_url(settings.redis_url, health_check_interval=30, socket_connect_timeout=5),
        consumer=settings.consumer or identity.instance_id,
    )
    s3 = session.client("s3", config=s3_config)
    agent = Agent(
        settings,
        queue=queue,
        backend=Backend(settings.backend_url, settings.backend_connect_timeout_s, settings.backend_read_timeout_s),
        # the reply, once per job, on the event loop (node_agent/s3.py says why); the rare rest through boto3
        replies=ReplyStore(SignedS3(session, settings.reply_bucket, s3_config, executor)),
        stopper=Stopper(settings.stop_mode, identity.instance_id, identity.region, executor),
        metrics=metrics,
        cloudwatch=CloudWatchPublisher(cloudwatch, executor),
        adopter=Adopter(Inbox(s3, settings.reply_bucket), queue, executor),
    )
    try:
        await agent.run()
    finally:
        await queue.redis.aclose()
        executor.shutdown(wait=False, cancel_futures=True)


def main() -> int:
    try:
        # the shape tl-shape chose at this boot wins over the converged settings: one image serves both shapes
        shape_file = Path(os.environ.get("TL_SHAPE_ENV") or SHAPE_ENV)
        settings = Settings.from_env({**os.environ, **read_env_file(shape_file)})
    except SettingsError as exc:
        print(f"tl-node-agent: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level)
    try:
        # libuv's event loop, its transports in C: they hand each read of the model server's stream straight to
        # node_agent/http1.py's protocol. A job costs the agent ~0.5 ms less CPU (docs/development.md).
        uvloop.run(amain(settings))
    except InstanceError as exc:
        log.error("cannot identify the instance", extra={"error": str(exc)})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
