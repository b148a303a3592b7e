"""Resizing the node: stop → wait until stopped → modify the instance type → start.

An HTTP API gives an integration 30 s, and a g4dn.xlarge can take longer than that to stop. So by default
(``TL_RESIZE_MODE=async``) the request is checked, the node is tagged ``tl-resizing``, and the function invokes
itself asynchronously to do the work (its timeout must cover a stop and a start: 10 minutes); the answer is
202. ``inline`` does the work within the request (local runs, where the local AWS stops instantly).
While ``tl-resizing`` is on the node, the router does not start it.

A target the account cannot run is refused before the node is stopped: its On-Demand vCPU quota (Service Quotas;
a new account has 0 for G instances) → 409 with the quota to request. A start refused by EC2 after the stop (no
capacity for the type in the zone, a quota) puts the node back in its old type and starts it, so it keeps
serving; the reason is the answer (inline), and is kept in the ``tl-resize-refused`` tag and the log (async).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas import routes
from lambdas.common import metrics, quotas
from lambdas.common.app import Answer, Event, HttpApp
from lambdas.common.auth import Claims, JwksCache, Verifier
from lambdas.common.http import HttpError, Request, respond
from lambdas.common.logs import log
from lambdas.common.node import REFUSED_TAG, RESIZING_TAG, find_node
from lambdas.common.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

Dispatch = Callable[[dict[str, Any]], None]


class ShapeControl(HttpApp):
    function = "shape_control"

    def __init__(
        self,
        settings: Settings,
        ec2: EC2Client,
        verifier: Verifier,
        dispatch: Dispatch | None,
        service_quotas: Any | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(settings, verifier, clock)
        self.ec2 = ec2
        self.dispatch = dispatch
        self.service_quotas = service_quotas

    @classmethod
    def from_env(cls, ec2: EC2Client, dispatch: Dispatch | None, service_quotas: Any | None = None) -> ShapeControl:
        s = Settings.from_env()
        s.require("jwks_url", "jwt_issuer", "jwt_audience")
        verifier = Verifier(JwksCache(s.jwks_url), s.jwt_issuer, s.jwt_audience, s.jwt_token_use)
        return cls(s, ec2, verifier, dispatch, service_quotas)

    def event(self, event: Event) -> Answer:
        if event.get("action") == "resize":  # the asynchronous invocation of itself that does the work
            return self.resize(str(event["instance"]), str(event["target"]), str(event.get("from") or ""))
        return super().event(event)

    def serve(self, route: routes.Route, req: Request, claims: Claims) -> Answer:
        """``POST /resize?target=<type>`` (the only route): admins only."""
        if self.s.admin_group not in claims.groups:
            raise HttpError(403, f"only members of the {self.s.admin_group} group may resize the node")
        target = req.query.get("target", "")
        if target not in self.s.resize_targets:
            allowed = ", ".join(self.s.resize_targets)
            raise HttpError(400, f"target: must be one of {allowed}, got {target[:32]!r}", field="target")
        try:
            node = find_node(self.ec2, self.s.node_tag)
            if node is None:
                raise HttpError(404, f"no instance tagged {'='.join(self.s.node_tag)}")
            if node.held:
                raise HttpError(409, "the node is held by the budget killer (tl-hold tag); remove the tag first")
            if node.resizing:
                raise HttpError(409, "a resize of the node is already under way")
            if node.instance_type == target:
                return respond(200, {"status": "unchanged", "instance": node.instance_id, "type": target})
            self.check_quota(target)
            self.ec2.create_tags(Resources=[node.instance_id], Tags=[{"Key": RESIZING_TAG, "Value": target}])
        except (ClientError, BotoCoreError) as exc:
            log("error", "resize not started", error=str(exc))
            raise HttpError(503, "cannot reach EC2; try again", status="unavailable") from None
        log("info", "resize requested", instance=node.instance_id, source=node.instance_type, target=target,
            user=claims.sub)  # fmt: skip
        job = {"action": "resize", "instance": node.instance_id, "target": target, "from": node.instance_type}
        body = {"instance": node.instance_id, "from": node.instance_type, "to": target}
        if self.s.resize_mode == "inline" or self.dispatch is None:
            done = self.resize(node.instance_id, target, node.instance_type)
            if done["status"] == "refused":
                message = f"EC2 refused {target}; the node runs as {node.instance_type} again: {done['reason']}"
                raise HttpError(409, message, status="refused", instance=node.instance_id, to=target)
            return respond(200, {**done, **body})
        try:
            self.dispatch(job)
        except (ClientError, BotoCoreError) as exc:
            self.ec2.delete_tags(Resources=[node.instance_id], Tags=[{"Key": RESIZING_TAG}])
            log("error", "resize not dispatched", error=str(exc))
            raise HttpError(503, "the resize could not be started; try again", status="unavailable") from None
        return respond(202, {"status": "resizing", **body})

    def check_quota(self, target: str) -> None:
        """409 when the account's On-Demand quota cannot hold ``target`` at all; nothing is stopped."""
        if self.service_quotas is None:
            return
        quota = quotas.safe_check(self.service_quotas, self.ec2, target)
        if quota is None:
            log("warning", "quota unknown; the start will tell", target=target)
        elif not quota.enough:
            log("warning", "resize refused: quota", target=target, quota=quota.code, allowed=quota.vcpus_allowed)
            raise HttpError(409, quota.advice(self.ec2.meta.region_name), status="quota", quota=quota.code,
                            vcpus_needed=quota.vcpus_needed, vcpus_allowed=quota.vcpus_allowed)  # fmt: skip

    def resize(self, instance_id: str, target: str, source: str = "") -> dict[str, Any]:
        """Stop, wait, retype, start; the ``tl-resizing`` tag comes off whatever happens. A start that EC2 refuses
        for capacity or quota puts the old type back and starts that (``status: refused``)."""
        started = time.monotonic()
        reason = None
        try:
            if not source:
                found = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
                source = found["InstanceType"]
            self.ec2.stop_instances(InstanceIds=[instance_id])
            self.ec2.get_waiter("instance_stopped").wait(
                InstanceIds=[instance_id], WaiterConfig={"Delay": 5, "MaxAttempts": 96}
            )
            self.ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": target})
            try:
                self.ec2.start_instances(InstanceIds=[instance_id])
            except ClientError as exc:
                reason = quotas.refusal(exc)
                if reason is None or source == target:
                    raise
                self.ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": source})
                self.ec2.start_instances(InstanceIds=[instance_id])
        finally:
            self.ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": RESIZING_TAG}])
        seconds = round(time.monotonic() - started, 1)
        if reason is not None:
            # a tag value holds up to 256 characters (EC2 User Guide, "Tag restrictions")
            self.ec2.create_tags(
                Resources=[instance_id], Tags=[{"Key": REFUSED_TAG, "Value": f"{target}: {reason}"[:256]}]
            )
            metrics.emit({"ResizesRefused": 1}, instance=instance_id, target=target)
            log("warning", "resize refused by EC2; old type started again", instance=instance_id, target=target,
                type=source, reason=reason, seconds=seconds)  # fmt: skip
            return {"status": "refused", "instance": instance_id, "type": source, "reason": reason, "seconds": seconds}
        self.ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": REFUSED_TAG}])
        metrics.emit({"Resizes": 1}, instance=instance_id, target=target)
        log("info", "node resized and started", instance=instance_id, target=target, seconds=seconds)
        return {"status": "resized", "instance": instance_id, "type": target, "seconds": seconds}
