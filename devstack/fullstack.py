"""The whole path on one machine, as ``make demo`` runs it and the end-to-end test proves it.

1. the node image (a systemd Debian 12 container, built with debootstrap when missing) and a fresh ``tl-node``
   at a fixed address on the podman bridge;
2. the local AWS (moto) on the build machine, listening on the podman bridge too, with IAM enforced: the deploy
   runs as an administrator, each function behind the edge with its own role's credentials, the node's agent and
   watchdog with the node role's (``MotoServer.enforce_iam``, ``devstack.cfn_moto.for_strict_moto``);
3. a Cognito user pool and a user; the AWS stacks and the Lambdas deployed into the local AWS by their playbooks
   (``devstack.deploy``), the queue in ``node`` mode: its secrets in SSM, the functions' copy in S3;
4. the node converged with ``playbooks/site.yml`` and ``inventory/local.yml`` (``devstack.node``): the model
   from a stand-in Hugging Face Hub on the bridge (``devstack.hub``, the small GGUF) through the copy it keeps in
   the bucket, as on AWS; the queue's Redis (TLS, ACL users), the agent;
5. the local edge (the HTTP API with the router) in front; it reaches the node's Redis over the bridge, as the
   functions reach the node's private address in the VPC, and parks requests in S3 while the node is stopped.

Each step's time is kept in ``timings``. ``close()`` copies the node's logs out and removes the container.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis

from devstack.deploy import ROLE_OUTPUTS, Deployment, deploy
from devstack.edge import LocalEdgeServer, UserPool, create_user, create_user_pool, tl_env
from devstack.hub import HubServer
from devstack.imds import ImdsServer
from devstack.node import (
    NodeContainer,
    bridge_gateway,
    build_wheel,
    converge,
    ensure_image,
    node_address,
    node_settings,
    podman,
)
from devstack.procs import StackError, wait_until
from devstack.servers import AWS_REGION, ensure_model
from devstack.stack import Stack
from jobqueue.inbox import Inbox
from jobqueue.queue import JobQueue
from lambdas.common.redis_client import with_secrets
from lambdas.local_api.app import ROLES_VARIABLE
from lambdas.routes import ROUTES

T = TypeVar("T")
AGENT: str = "tl-node-agent"  # the supervisor program (roles/node_agent)
# the shapes' model servers (tl_shapes, playbooks/group_vars/all.yml): tl-shape starts one at each boot
INFERENCE: str = "tl-inference-builder"
GPU_INFERENCE: str = "tl-inference-gpu"


@dataclass(frozen=True)
class Boot:
    parked: list[str]
    """The ids of the jobs in S3's inbox when the router had started the node."""
    seconds: float
    """From the container's start to the agent running."""


# The model the local node fetches from the stand-in Hub: the small GGUF the tests use, under a Hub-like name.
HUB_REPO = "tl-test/tiny-instruct-GGUF"
HUB_FILE = "tiny-instruct-q4_k_m.gguf"


def _made(value: T | None, what: str) -> T:
    if value is None:
        raise StackError(f"{what} is not made yet (FullStack.open makes it)")
    return value


class FullStack:
    def __init__(self, workdir: Path, user: str, password: str, *, say: Callable[[str], None] = print) -> None:
        self.workdir = workdir
        self.user = user
        self.password = password
        self.say = say
        self.timings: dict[str, float] = {}
        self.node = NodeContainer()
        self._stack: Stack | None = None
        self._edge: LocalEdgeServer | None = None
        self._pool: UserPool | None = None
        self._deployment: Deployment | None = None
        self._hub: HubServer | None = None
        self._imds: ImdsServer | None = None
        self._operator = ""

    # What open() makes, in order; reading one before it is made is a StackError.
    @property
    def stack(self) -> Stack:
        return _made(self._stack, "the stack")

    @property
    def pool(self) -> UserPool:
        return _made(self._pool, "the user pool")

    @property
    def deployment(self) -> Deployment:
        return _made(self._deployment, "the deployment")

    @property
    def hub(self) -> HubServer:
        return _made(self._hub, "the stand-in Hub")

    @property
    def edge(self) -> LocalEdgeServer:
        return _made(self._edge, "the edge")

    def _step(self, name: str, what: str, action: Callable[[], T]) -> T:
        self.say(f"--- {what}")
        started = time.monotonic()
        result = action()
        self.timings[name] = round(time.monotonic() - started, 1)
        self.say(f"    {self.timings[name]:.1f} s")
        return result

    def open(self) -> FullStack:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.node.fixed_address = node_address()
        self._step("container", f"the node: a systemd container {self.node.name} from {self.node.image}",
                   self._container)  # fmt: skip
        host = bridge_gateway()
        self._stack = Stack(self.workdir / "stack", host=host, prepare=False, local_redis=False)
        self._step("stack", f"the local AWS (moto) with IAM enforced, reachable from the node on the podman bridge "
                            f"({host})", self._start_stack)  # fmt: skip
        self._pool = create_user_pool(self.stack)
        create_user(self.stack, self.pool, self.user, self.password)
        self._deployment = self._step(
            "deploy", "AWS stacks and Lambdas into the local AWS (playbooks/stack.yml, playbooks/lambdas.yml)",
            lambda: deploy(self.stack, self.pool, self.workdir / "deploy", self.node.fixed_address, self._operator),
        )  # fmt: skip
        self._step("converge", "the node: ansible-playbook -i inventory/local.yml playbooks/site.yml", self._converge)
        # each function behind the edge on its own role, as Lambda runs it (the edge itself on the router's)
        functions = self.deployment.outputs["functions"]
        roles = {fn: self.stack.moto.role_credentials(functions[ROLE_OUTPUTS[fn]], f"tl-{fn}")
                 for fn in sorted({route.function for route in ROUTES})}  # fmt: skip
        self._edge = LocalEdgeServer(self.workdir / "edge", {**self.deployment.function_env, **roles["router"],
                                                             ROLES_VARIABLE: json.dumps(roles)})  # fmt: skip
        self.edge.start()
        return self

    def _start_stack(self) -> None:
        self.stack.start()
        self._operator = self.stack.moto.enforce_iam()
        self._hub = HubServer({HUB_REPO: {HUB_FILE: ensure_model()}}, host=self.stack.moto.host).start()
        # the node's instance metadata: the type its instance has in the local AWS now, as EC2's IMDS answers
        self._imds = ImdsServer(lambda: self.stack.instance_id, self.instance_type, AWS_REGION,
                                host=self.stack.moto.host).start()  # fmt: skip

    def instance_type(self) -> str:
        ec2 = self.stack.ec2()
        found = ec2.describe_instances(InstanceIds=[self.stack.instance_id])["Reservations"][0]["Instances"][0]
        return found["InstanceType"]

    def _container(self) -> None:
        ensure_image(self.node.image)
        self.node.create()

    def _converge(self) -> None:
        package = build_wheel(self.workdir / "dist")
        node_role = self.stack.moto.role_credentials(self.deployment.outputs["node"]["NodeRoleArn"], "tl-node")
        sha256 = self.hub.sha256(HUB_REPO, HUB_FILE)
        hub = {"endpoint": self.hub.url, "repo": HUB_REPO, "file": HUB_FILE, "sha256": sha256}
        settings = {**node_settings(self.stack, self.deployment, package), "credentials": node_role, "model": "",
                    "hub": hub, "imds": _made(self._imds, "the IMDS stand-in").url}  # fmt: skip
        converge(self.stack, self.node, settings, self.workdir / "converge.log")
        self.node.wait_supervised(AGENT)

    def stop_node(self) -> None:
        """The node as nobody has used it for a while: the instance stopped, the container shut down."""
        ec2 = self.stack.ec2()
        ec2.stop_instances(InstanceIds=[self.stack.instance_id])
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[self.stack.instance_id], WaiterConfig={"Delay": 1})
        self.node.shut_down()

    def boot_when_started(self, timeout_s: float = 60) -> Boot:
        """Wait for the router to park a request in S3 and start the instance (it does both at once, so either may
        land first), then boot the container as EC2 would: what was parked, and the boot's seconds (until the
        agent runs)."""
        parked: list[str] = []

        def parked_and_started() -> bool:
            parked[:] = self.parked()
            return bool(parked) and self.stack.node_state() == "running"

        wait_until(parked_and_started, timeout_s, "the router to park the request and start the node", 0.1)
        started = time.monotonic()
        self.node.boot()
        self.node.wait_supervised(AGENT)
        return Boot(parked, time.monotonic() - started)

    def node_log(self, name: str) -> list[str]:
        """The lines of one of the node's logs (/var/log/tinyllama/<name>)."""
        return self.node.exec("cat", f"/var/log/tinyllama/{name}", check=False).stdout.splitlines()

    def queue(self) -> JobQueue:
        """The node's queue as the router sees it: over TLS, as the ``router`` user (while the node runs)."""
        env = self.deployment.function_env
        url = with_secrets(env["TL_REDIS_URL"], env["TL_REDIS_SECRETS"], self.stack.s3())
        return JobQueue(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2))

    def parked(self) -> list[str]:
        """The ids of the jobs parked in S3 now (``inbox/``)."""
        return list(Inbox(self.stack.s3(), self.stack.bucket).job_ids())

    def tl_env(self) -> dict[str, str]:
        """The environment ``tl`` gets: the local API and Cognito, a token file of its own."""
        return tl_env(self.stack, self.edge.url, self.pool, self.workdir / "token.json", TL_PASSWORD=self.password)

    def close(self) -> None:
        logs = self.workdir / "node-logs"
        if self.node.running():
            logs.mkdir(parents=True, exist_ok=True)
            podman("cp", f"{self.node.name}:/var/log/tinyllama", str(logs), check=False)
            podman("cp", f"{self.node.name}:/var/log/supervisor", str(logs), check=False)
        self.node.remove()
        if self._edge is not None:
            self._edge.stop()
        if self._stack is not None:
            self._stack.stop()
        if self._hub is not None:
            self._hub.stop()
        if self._imds is not None:
            self._imds.stop()

    def __enter__(self) -> FullStack:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
