"""The whole local stack in one object: Redis, local AWS, a model server and node agents.

Tests, the benchmark and ``make demo`` all build on this, so what the demo shows is what the tests prove.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import redis
from botocore.exceptions import ClientError

from devstack.procs import Process, StackError, clean_env, free_port, http_ok, pythonpath, venv_tool
from devstack.servers import AWS_REGION, LOOPBACK, MotoServer, RedisServer
from jobqueue import contract
from jobqueue.contract import Job
from jobqueue.queue import JobQueue

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient

BUCKET: Final = "tinyllama-data-replies"
NODE_TAG_KEY: Final = "env"
NODE_TAG_VALUE: Final = "tinyllama"


class StandInServer(Process):
    """The fixed-latency stand-in backend (``devstack.standin``) as a separate process."""

    def __init__(self, workdir: Path, latency_s: float, chunks: int = 8) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "devstack.standin", "--port", str(self.port), "--latency", str(latency_s),
                "--chunks", str(chunks)]  # fmt: skip
        super().__init__(f"standin-{self.port}", argv, workdir, env={**os.environ, "PYTHONPATH": pythonpath()})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        self.wait_up(lambda: http_ok(f"{self.url}/health"), 20, "stand-in backend")

    def stats(self) -> dict[str, Any]:
        import httpx  # noqa: PLC0415

        return dict(httpx.get(f"{self.url}/stats", timeout=5).json())


class Stack:
    """``host``: where Redis and moto listen besides loopback (the local node container's way to the host).
    ``prepare``: make a reply bucket and a node instance straight away (False: the AWS stack is deployed into the
    local AWS instead, by ``devstack.deploy``). ``local_redis``: run a redis-server here (False: the queue is the node's
    own, as with ``aws_stack_queue: node``; ``devstack.fullstack``). ``moto_keep_alive``: moto's app behind a server
    that keeps connections open, as S3 does (``devstack.moto_keepalive``; the agent's benchmark)."""

    def __init__(
        self,
        workdir: Path,
        host: str = LOOPBACK,
        *,
        prepare: bool = True,
        local_redis: bool = True,
        moto_keep_alive: bool = False,
    ) -> None:
        self.workdir = workdir
        self.prepare = prepare
        self.with_redis = local_redis
        self.redis = RedisServer(workdir / "redis", host=host if local_redis else LOOPBACK)
        self.moto = MotoServer(workdir / "moto", host=host, keep_alive=moto_keep_alive)
        self.agents: list[Process] = []
        self._agents_started = 0  # names stay unique across resets: a log file is never an earlier agent's
        self.instance_id = ""
        self.bucket = BUCKET
        self._image = ""

    # ------------------------------------------------------------ start and stop

    def start(self) -> Stack:
        if self.with_redis:
            self.redis.start()
        self.moto.start()
        if self.prepare:
            self.prepare_aws()
        return self

    def prepare_aws(self) -> None:
        """The reply bucket and a running node instance tagged env=tinyllama, as the AWS stack would have."""
        self.s3().create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": AWS_REGION})
        made = self.ec2().run_instances(
            ImageId=self.image(),
            InstanceType="t3.small",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": NODE_TAG_KEY, "Value": NODE_TAG_VALUE}]}],
        )
        self.instance_id = made["Instances"][0]["InstanceId"]

    def image(self) -> str:
        """An AMI id of the local AWS (listing moto's AMIs takes ~2 s; their ids survive a reset)."""
        if not self._image:
            self._image = self.ec2().describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        return self._image

    def reset(self) -> None:
        """Back to a fresh stack without restarting moto (its start-up costs seconds): stop the agents, empty
        Redis (starting it again if a test stopped it), and reset the local AWS to the prepared state."""
        self.stop_agents()
        if not self.redis.alive():
            self.redis.start()
        self.redis.client().flushall()
        self.moto.reset()
        self.prepare_aws()

    def stop_agents(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.agents.clear()

    def stop(self) -> None:
        self.stop_agents()
        self.moto.stop()
        self.redis.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ clients

    def s3(self) -> S3Client:
        client: S3Client = self.moto.client("s3")
        return client

    def ec2(self) -> EC2Client:
        client: EC2Client = self.moto.client("ec2")
        return client

    def ssm(self) -> SSMClient:
        client: SSMClient = self.moto.client("ssm")
        return client

    def cloudwatch(self) -> CloudWatchClient:
        client: CloudWatchClient = self.moto.client("cloudwatch")
        return client

    def node(self) -> dict[str, Any]:
        """The node instance as EC2 (moto) describes it now."""
        found = self.ec2().describe_instances(InstanceIds=[self.instance_id])
        return dict(found["Reservations"][0]["Instances"][0])

    def node_state(self) -> str:
        return str(self.node()["State"]["Name"])

    def queue(self) -> JobQueue:
        return JobQueue(redis.Redis.from_url(self.redis.url))

    def beat(self, state: str | None = "ready", *, ttl_s: int = 60, **fields: Any) -> None:
        """Write the heartbeat an agent of this stack's node would (``state`` ``None``: no agent speaks, the key
        is deleted), for tests of what the router and the watchdog make of it with no agent running."""
        r = redis.Redis.from_url(self.redis.url)
        if state is None:
            r.delete(contract.HEARTBEAT)
            return
        beat = {"state": state, "instance_id": self.instance_id, "at": time.time(), **fields}
        r.set(contract.HEARTBEAT, json.dumps(beat), ex=ttl_s)

    # ------------------------------------------------------------ agents

    def agent_env(self, backend_url: str, **overrides: str) -> dict[str, str]:
        env = clean_env()
        env.update(self.moto.aws_env())
        env.update(
            {
                "PYTHONPATH": pythonpath(),
                "TL_REDIS_URL": self.redis.url,
                "TL_BACKEND_URL": backend_url,
                "TL_REPLY_BUCKET": self.bucket,
                "TL_INSTANCE_ID": self.instance_id,
                "TL_STOP_MODE": "dry-run",
                "TL_METRICS_PORT": str(free_port()),
                "TL_LOG_LEVEL": "INFO",
            }
        )
        env.update(overrides)
        return env

    def start_agent(self, backend_url: str, *, wait: bool = True, **overrides: str) -> Process:
        """Run ``tl-node-agent`` as its own process, as supervisor does on the node."""
        name = f"agent-{self._agents_started}"
        self._agents_started += 1
        agent = Process(
            name, [venv_tool("tl-node-agent")], self.workdir / "agents", self.agent_env(backend_url, **overrides)
        )
        agent.start()
        self.agents.append(agent)
        if wait:
            self.wait_agent_ready(agent)
        return agent

    def wait_agent_ready(self, agent: Process, timeout_s: float = 30) -> None:
        agent.wait_up(lambda: "agent ready" in agent.log_path.read_text(errors="replace"), timeout_s,
                      f"{agent.name} to report ready")  # fmt: skip

    # ------------------------------------------------------------ jobs and replies

    def submit(self, prompt: str | None, **fields: Any) -> Job:
        """Queue a job as the router would: a prompt, or ``prompt=None`` with ``messages=[...]``."""
        job = contract.new_job(prompt, fields.pop("owner", "demo-user"), **fields)
        self.queue().enqueue(job)
        return job

    def reply(self, job_id: str) -> dict[str, Any] | None:
        return read_reply(self.s3(), job_id, self.bucket)

    def wait_reply(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """The job's reply, once the job is settled. The agent stores the reply in S3 first and settles the job in
        Redis just after (``result:<id>``, the dead letter, the ack: one Lua call); a test that reads Redis as soon
        as the reply shows would race that second write, so this waits for it too (not while Redis is away)."""
        reply = wait_reply(self.s3(), job_id, timeout_s, self.bucket)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.redis.client().exists(contract.result_key(job_id)):
                    break
            except redis.RedisError:
                break  # Redis away: nothing there to race
            time.sleep(0.02)
        return reply

    def reply_versions(self, job_id: str) -> int:
        """How many objects were ever written for this reply (the bucket is unversioned, so: 0 or 1)."""
        listed = self.s3().list_objects_v2(Bucket=self.bucket, Prefix=contract.reply_object_key(job_id))
        return int(listed.get("KeyCount", 0))


def read_reply(s3: S3Client, job_id: str, bucket: str = BUCKET) -> dict[str, Any] | None:
    """The final reply of a job, or None while there is none."""
    try:
        body = s3.get_object(Bucket=bucket, Key=contract.reply_object_key(job_id))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
            return None
        raise
    return dict(json.loads(body))


def wait_reply(s3: S3Client, job_id: str, timeout_s: float = 60, bucket: str = BUCKET) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = read_reply(s3, job_id, bucket)
        if found is not None:
            return found
        time.sleep(0.1)
    raise StackError(f"no reply for job {job_id} after {timeout_s:.0f} s")
