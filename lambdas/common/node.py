"""The node instance: find it by its tag, start it, stop it, change its type.

Two tags on the instance carry state that every function must respect:
``tl-hold`` — set by the budget killer; nothing starts the node until an operator removes it;
``tl-resizing`` — set by shape_control while it stops, retypes and starts the node; a cold boot waits.
A third records what happened: ``tl-resize-refused`` — the last resize EC2 refused (capacity, quota), and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

HOLD_TAG: Final = "tl-hold"
RESIZING_TAG: Final = "tl-resizing"
REFUSED_TAG: Final = "tl-resize-refused"
LIVE_STATES: Final = ("pending", "running", "stopping", "stopped")


@dataclass(frozen=True)
class Node:
    instance_id: str
    state: str
    instance_type: str
    tags: dict[str, str]

    @property
    def held(self) -> bool:
        return HOLD_TAG in self.tags

    @property
    def resizing(self) -> bool:
        return RESIZING_TAG in self.tags


def _node(instance: Any) -> Node:
    return Node(
        instance_id=instance["InstanceId"],
        state=instance["State"]["Name"],
        instance_type=instance["InstanceType"],
        tags={t["Key"]: t["Value"] for t in instance.get("Tags", [])},
    )


def find_nodes(ec2: EC2Client, tag: tuple[str, str], states: tuple[str, ...] = LIVE_STATES) -> list[Node]:
    """Every instance carrying the node tag in one of ``states``, oldest launch first."""
    found: list[tuple[Any, Node]] = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{tag[0]}", "Values": [tag[1]]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]
    )
    for page in pages:
        for reservation in page["Reservations"]:
            found.extend((i.get("LaunchTime"), _node(i)) for i in reservation["Instances"])
    found.sort(key=lambda pair: (str(pair[0]), pair[1].instance_id))
    return [node for _, node in found]


def find_node(ec2: EC2Client, tag: tuple[str, str]) -> Node | None:
    nodes = find_nodes(ec2, tag)
    return nodes[0] if nodes else None
