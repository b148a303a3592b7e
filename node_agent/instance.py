"""The node's own EC2 instance: who it is (IMDSv2) and how it stops itself."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import boto3
import httpx
from botocore.exceptions import BotoCoreError, ClientError

from node_agent.settings import StopMode

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

log = logging.getLogger("node_agent.instance")

IMDS_DEFAULT: Final = "http://169.254.169.254"
IMDS_TOKEN_TTL_S: Final = 21600


class InstanceError(Exception):
    """The instance could not be identified or stopped."""


@dataclass(frozen=True)
class Identity:
    instance_id: str
    region: str | None


async def imds_read(
    names: list[str], endpoint: str | None = None, timeout_s: float = 2.0, tries: int = 3
) -> dict[str, str]:
    """``/latest/meta-data/<name>`` for each name, from IMDSv2 (session token first) at botocore's standard
    endpoint variable; a name IMDS does not answer is left out, the first is required."""
    base = (endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or IMDS_DEFAULT).rstrip("/")
    last = ""
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s) as http:
        for attempt in range(tries):
            try:
                token = await http.put(
                    "/latest/api/token",
                    headers={"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_S)},
                )
                token.raise_for_status()
                headers = {"X-aws-ec2-metadata-token": token.text}
                found = {}
                for i, name in enumerate(names):
                    answer = await http.get(f"/latest/meta-data/{name}", headers=headers)
                    if i == 0:
                        answer.raise_for_status()
                    if answer.is_success:
                        found[name] = answer.text.strip()
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.5 * (attempt + 1))
            else:
                return found
    raise InstanceError(f"cannot read {names[0]} from IMDSv2 at {base}: {last}")


async def imds_identity(endpoint: str | None = None, timeout_s: float = 2.0, tries: int = 3) -> Identity:
    """Instance id and region from IMDSv2."""
    try:
        found = await imds_read(["instance-id", "placement/region"], endpoint, timeout_s, tries)
    except InstanceError as exc:
        raise InstanceError(f"{exc}; set TL_INSTANCE_ID") from None
    return Identity(found["instance-id"], found.get("placement/region"))


class Stopper:
    """Stops this instance (``stop``) or only says it would (``dry-run``)."""

    def __init__(self, mode: StopMode, instance_id: str, region: str | None, executor: Executor) -> None:
        self.mode = mode
        self.instance_id = instance_id
        self._region = region
        self._executor = executor
        self._ec2: EC2Client | None = None  # created on first use: the EC2 model costs ~20 MB of memory

    async def stop(self, kind: str, reason: str) -> bool:
        """Stop the instance; ``kind`` names the stop in the log (``idle``, ``backend not ready``). True when
        StopInstances was called, False in dry-run; an EC2 refusal is an InstanceError."""
        if self.mode == "dry-run":
            log.warning(f"{kind} stop (dry run): would stop the instance", extra=self._fields(reason))
            return False
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._stop)
        log.warning(f"{kind} stop: StopInstances called", extra=self._fields(reason))
        return True

    def _stop(self) -> None:
        if self._ec2 is None:
            self._ec2 = boto3.client("ec2", region_name=self._region)
        try:
            self._ec2.stop_instances(InstanceIds=[self.instance_id])
        except (ClientError, BotoCoreError) as exc:
            raise InstanceError(f"StopInstances {self.instance_id} failed: {exc}") from None

    def _fields(self, reason: str) -> dict[str, str]:
        return {"instance_id": self.instance_id, "reason": reason, "mode": self.mode}
