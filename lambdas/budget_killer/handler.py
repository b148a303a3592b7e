"""Lambda entry point of budget_killer: ``lambdas.budget_killer.handler.handler``.

On the budget alarm it stops every instance tagged with the node tag and tags each ``tl-hold`` so that no
request starts it again (the router answers 503 ``held`` until an operator removes the tag). Switches:
``TL_BUDGET_RELEASE_EIP`` also releases the nodes' Elastic IPs, ``TL_BUDGET_DELETE_REDIS`` deletes the
ElastiCache Redis (its replication group). Running it twice does nothing more the second time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from lambdas.common import metrics
from lambdas.common.app import Entry
from lambdas.common.clients import aws
from lambdas.common.logs import log
from lambdas.common.node import HOLD_TAG, find_nodes
from lambdas.common.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_elasticache import ElastiCacheClient


def alarm_messages(event: dict[str, Any]) -> list[str]:
    return [str((r.get("Sns") or {}).get("Message", "")) for r in event.get("Records", [])]


def kill(s: Settings, ec2: EC2Client, elasticache: ElastiCacheClient | None, today: dt.date) -> dict[str, Any]:
    nodes = find_nodes(ec2, s.node_tag, states=("pending", "running", "stopping", "stopped"))
    ids = [n.instance_id for n in nodes]
    to_stop = [n.instance_id for n in nodes if n.state in ("pending", "running")]
    hold = f"budget-{today.isoformat()}"
    if ids:
        unheld = [n.instance_id for n in nodes if not n.held]
        if unheld:
            ec2.create_tags(Resources=unheld, Tags=[{"Key": HOLD_TAG, "Value": hold}])
    if to_stop:
        ec2.stop_instances(InstanceIds=to_stop)
    released: list[str] = []
    if s.budget_release_eip and ids:
        addresses = ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": ids}])["Addresses"]
        for address in addresses:
            if "AssociationId" in address:
                ec2.disassociate_address(AssociationId=address["AssociationId"])
            ec2.release_address(AllocationId=address["AllocationId"])
            released.append(address.get("PublicIp", address["AllocationId"]))
    redis_deleted = False
    if s.budget_delete_redis and s.redis_cluster_id and elasticache is not None:
        try:
            # The queue is a replication group of one (the only ElastiCache Redis with encryption at rest).
            elasticache.delete_replication_group(ReplicationGroupId=s.redis_cluster_id, RetainPrimaryCluster=False)
            redis_deleted = True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("ReplicationGroupNotFoundFault", "InvalidReplicationGroupState"):
                raise
    metrics.emit({"BudgetStops": len(to_stop)})
    summary = {"stopped": to_stop, "held": ids, "released_eips": released, "redis_deleted": redis_deleted}
    log("warning", "budget killer ran", **summary)
    return summary


@dataclass(frozen=True)
class BudgetKiller:
    settings: Settings
    ec2: EC2Client
    elasticache: ElastiCacheClient | None

    @classmethod
    def from_env(cls) -> BudgetKiller:
        s = Settings.from_env()
        return cls(s, aws("ec2"), aws("elasticache") if s.budget_delete_redis else None)

    def handle(self, event: dict[str, Any], context: object = None) -> dict[str, Any]:
        log("warning", "budget alarm received", messages=alarm_messages(event))
        return kill(self.settings, self.ec2, self.elasticache, dt.datetime.now(dt.UTC).date())


entry: Entry[BudgetKiller] = Entry(lambda context: BudgetKiller.from_env())
reset = entry.reset


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    return entry(event, context)
